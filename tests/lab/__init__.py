"""Lab tests: real libvirt + QEMU hosts made by deploy/lab (root only)."""
