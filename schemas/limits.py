"""Size limits of everything a request may carry, and of one ``jobs`` page: one place, with why.

Every list and string field of every request (and of the messages nested in one) has a maximum
here, enforced by msgspec at decode (``codec.decode_request``): an oversized request is refused
with ``bad_request`` naming the field and the limit (``Expected `array` of length <= 256 - at
`$.paths```), before any handler runs, and the service goes on serving. The limits are generous
for real use and small enough that no request can make a reply or a piece of work unbounded.
Pure data: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

# --- strings ----------------------------------------------------------------------------------
HOST_ID_MAX: Final = 64  # one NATS subject token; a DNS label is at most 63 characters
VM_NAME_MAX: Final = 255  # what libvirt and filesystems accept as one name component
NAME_MAX: Final = 255  # pool names, disk formats, disk targets: Linux's NAME_MAX per component
PATH_MAX: Final = 4096  # Linux's PATH_MAX: no longer path can be opened anyway
URI_MAX: Final = 2048  # a libvirt URI with its query; browsers and proxies stop near here too
ADDRESS_MAX: Final = 255  # a DNS name is at most 253 characters, an IPv6 literal 45
TEXT_MAX: Final = 4096  # free-form text a person reads: a page of it is plenty
CPU_XML_MAX: Final = 64 * 1024  # a guest CPU with every feature listed is ~10 KiB
CURSOR_MAX: Final = 64  # a jobs cursor is a number the coordinator handed out

# --- lists ------------------------------------------------------------------------------------
DISKS_MAX: Final = 64  # disks of one VM in one request; a guest rarely has more than a few dozen
# storage.probe: a 64-disk VM's disks, their directories and target paths, and the pools, fit.
PROBE_PATHS_MAX: Final = 256
DELETE_PATHS_MAX: Final = DISKS_MAX  # cleanup deletes at most one file per disk
HOSTS_MAX: Final = 256  # hosts named in one request (a drain's destinations)
DOMAIN_NAMES_MAX: Final = 256  # domains asked for by name at once; callers ask for one
# cpu.baseline: one host CPU per host of the cluster, and the distinct guest CPU definitions of
# its VMs (VMs sharing a definition send it once). NATS's 1 MiB max payload bounds a real
# request well below these times CPU_XML_MAX; these bound the work one request may ask for.
BASELINE_HOSTS_MAX: Final = HOSTS_MAX
BASELINE_GUESTS_MAX: Final = 256

# --- jobs pages -------------------------------------------------------------------------------
JOBS_PAGE_DEFAULT: Final = 50  # a request without ``limit`` (old clients too) gets this many
JOBS_PAGE_MAX: Final = 200  # records of ~2 KiB each: ~400 KiB, under NATS's default 1 MiB
# A page also stops before its records pass this many encoded bytes, so a page of unusually
# large records (dozens of disks, long errors) still fits the default 1 MiB max payload.
JOBS_PAGE_MAX_BYTES: Final = 512 * 1024

# --- bounded string types ---------------------------------------------------------------------
Name = Annotated[str, msgspec.Meta(max_length=NAME_MAX)]
PathText = Annotated[str, msgspec.Meta(max_length=PATH_MAX)]  # a path, not checked to be absolute
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX)]
