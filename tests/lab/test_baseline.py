"""``baton hosts --baseline`` against real libvirt + QEMU, checked from outside Baton: the baseline
is what ``virsh hypervisor-cpu-baseline`` computes over the three hosts' CPUs from their own
``virsh capabilities``, and a guest running in the lab (whose hosts share one physical CPU) is
judged runnable. No migration: one small guest on h1.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.lab.labctl import GuestFactory, Lab
from tests.lab.stack import BatonStack

pytestmark = pytest.mark.lab
HOSTS = ("h1", "h2", "h3")


def host_cpu(capabilities: str) -> str:
    cpu = ET.fromstring(capabilities).find("host/cpu")
    assert cpu is not None
    return ET.tostring(cpu, encoding="unicode")


def virt_type(capabilities: str) -> str:
    """What the agent asks libvirt's baseline for: kvm when the host offers it, else qemu."""
    offered = {d.get("type") for d in ET.fromstring(capabilities).iter("domain")}
    return "kvm" if "kvm" in offered else "qemu"


def test_the_baseline_is_libvirts_over_every_host_and_a_running_guest_runs_on_it(
        lab: Lab, stack: BatonStack, guest: GuestFactory) -> None:
    vm = guest("h1")
    result = stack.baton("hosts", "--baseline", "-o", "json")
    shown = json.loads(result.stdout)

    capabilities = {host: lab.virsh(host, "capabilities") for host in HOSTS}
    on = shown["computed_on"]
    inside = f"/var/lib/libvirt/images/{vm}-cpus.xml"  # virsh reads it inside the host
    cpus = lab.host_path(on, inside)
    cpus.write_text("\n".join(host_cpu(capabilities[host]) for host in HOSTS))
    try:
        expected = ET.fromstring(lab.virsh(on, "hypervisor-cpu-baseline", "--features",
                                           "--virttype", virt_type(capabilities[on]),
                                           "--file", inside))
    finally:
        cpus.unlink()
    required = sorted(f.get("name", "") for f in expected.iter("feature")
                      if f.get("policy", "require") in ("require", "force"))
    assert ("hypervisor", list(HOSTS), {}, "") == (
        shown["computed_by"], [h["host"] for h in shown["hosts"]], shown["unanswered"],
        result.stderr)
    assert (expected.findtext("model"), required) == (shown["baseline"]["model"],
                                                      shown["baseline"]["features"])

    # The lab's guests are TCG (domain type qemu): QEMU emulates their CPU (qemu64 requires
    # svm, which an Intel host lacks, and runs all the same), so the physical baseline does not
    # judge them.
    assert ("running", "qemu") == (lab.domstate("h1", vm), domain_type(lab.virsh("h1", "dumpxml", vm)))
    [row] = [v for v in shown["vms"] if v["vm"] == vm]
    assert ("h1", "qemu64", "not_judged", []) == (row["host"], row["cpu"], row["fit"],
                                                  row["missing_features"]), row["reason"]
    assert row["reason"].startswith("TCG guest (domain type qemu)")


def domain_type(domain_xml: str) -> str | None:
    return ET.fromstring(domain_xml).get("type")
