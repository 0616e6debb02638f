"""Host facts for the unit fakes of libvirt: a plain QEMU host with the given pools."""

from __future__ import annotations

from collections.abc import Iterable

from baton.agent.hypervisor import HostFacts
from baton.schemas.agent import CpuInfo, Memory, StoragePool, Versions


def host_facts(pool_dirs: Iterable[str] = ()) -> HostFacts:
    """A host whose active ``dir`` pools are ``pool_dirs`` (named pool0, pool1, ...)."""
    return HostFacts(
        hostname="fakehost", cpu=CpuInfo(arch="x86_64", vendor="AMD", model="EPYC"),
        versions=Versions(libvirt="9.0.0", hypervisor="10.0.2", hypervisor_type="QEMU",
                          agent="0.1.0"),
        memory=Memory(total_bytes=8 << 30, free_bytes=4 << 30),
        pools=[StoragePool(name=f"pool{i}", type="dir", target_path=str(d), active=True)
               for i, d in enumerate(pool_dirs)])
