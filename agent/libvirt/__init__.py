"""The libvirt boundary: the only package that imports ``libvirt`` (deploy/test enforces it).

:class:`LibvirtHypervisor` implements the agent's ``Hypervisor`` protocol on a real connection.
"""

from baton.agent.libvirt.adapter import LibvirtHypervisor

__all__ = ["LibvirtHypervisor"]
