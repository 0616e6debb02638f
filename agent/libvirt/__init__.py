"""The libvirt boundary: the only package that imports ``libvirt`` (deploy/test enforces it).

:class:`LibvirtHypervisor` (:mod:`.adapter`) implements the agent's ``Hypervisor`` protocol on a
real connection, delegating to one module per responsibility: :mod:`.connection` (connection,
threads, error translation), :mod:`.events`, :mod:`.host`, :mod:`.domains`, :mod:`.migrate`,
:mod:`.blockjobs`; :mod:`.values` turns libvirt's plain return values into Baton's types.
"""

from baton.agent.libvirt.adapter import LibvirtHypervisor

__all__ = ["LibvirtHypervisor"]
