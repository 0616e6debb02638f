"""What an agent tells about its host's identity: libvirt's host UUID from the capabilities XML,
and the refusal that names the agent already serving a host id."""

from __future__ import annotations

from baton.agent import xmlparse
from baton.agent.identity import HostTaken
from baton.mesh.client import AgentInfo
from baton.schemas.errors import ErrorCode

CAPS = """<capabilities><host><uuid> 4c4c4544-0042-3510-8051-b4c04f4a3732 </uuid>
<cpu><arch>x86_64</arch></cpu></host></capabilities>"""


def test_the_host_uuid_comes_from_the_capabilities_xml() -> None:
    assert "4c4c4544-0042-3510-8051-b4c04f4a3732" == xmlparse.host_uuid(CAPS)


def test_capabilities_without_a_host_uuid_give_none() -> None:
    assert xmlparse.host_uuid("<capabilities><host><cpu/></host></capabilities>") is None


def test_the_refusal_names_the_serving_agent_s_instance_and_libvirt_host() -> None:
    other = AgentInfo(host_id="h1", service_id="SVC1", protocol_version="0.1.0", libvirt_host_uuid="4c4c4544")
    refused = HostTaken("h1", other, "hv1.example")
    assert (
        ErrorCode.CONFLICT,
        "another agent already serves host h1 (instance SVC1, libvirt "
        "host uuid 4c4c4544, hostname hv1.example); stop it first",
    ) == (refused.code, refused.message)
