"""libvirt test-driver host definitions (``test:///path/host.xml``), one per agent under test."""

from __future__ import annotations

from pathlib import Path

_DOMAIN = """
  <domain type='test'>
    <name>{name}</name>
    <memory>131072</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='{pool_dir}/{name}.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='bridge'>
        <source bridge='br-vm'/>
        <mac address='52:54:00:00:00:{mac}'/>
      </interface>
    </devices>
  </domain>"""

_POOL = """
  <pool type='dir'>
    <name>{pool}</name>
    <target><path>{pool_dir}</path></target>{volumes}
  </pool>"""

_VOLUME = """
    <volume type='file'>
      <name>{name}.qcow2</name>
      <capacity>268435456</capacity>
      <target><path>{pool_dir}/{name}.qcow2</path><format type='qcow2'/></target>
    </volume>"""

_NETWORK = """
  <network>
    <name>{host}-net</name>
    <bridge name='virbr-{host}'/>
    <forward mode='bridge'/>
  </network>"""


def write_host_xml(directory: Path, host: str, domains: list[str]) -> str:
    """Write a host with its own pool, network and running domains; return its libvirt URI.

    As in the lab, the domains' disks live in ``shared/``, a directory every host sees and
    defines as its pool ``shared``; ``<host>-pool`` is the host's own."""
    pool_dir, shared = directory / f"{host}-pool", directory / "shared"
    pool_dir.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    doms = "".join(
        _DOMAIN.format(name=name, pool_dir=shared, mac=f"{i:02x}") for i, name in enumerate(domains)
    )
    volumes = "".join(_VOLUME.format(name=name, pool_dir=shared) for name in domains)
    text = "<node>" + doms + _POOL.format(pool=f"{host}-pool", pool_dir=pool_dir, volumes="")
    text += _POOL.format(pool="shared", pool_dir=shared, volumes=volumes)
    text += _NETWORK.format(host=host) + "\n</node>\n"
    path = directory / f"{host}.xml"
    path.write_text(text)
    return f"test://{path}"
