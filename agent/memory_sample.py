"""A guest's memory, sampled page by page (issue #12): how much of it is zero pages, and how fast
it dirties the rest. Pure; the pages are read by the hypervisor port (``page_digests``, libvirt's
``virDomainMemoryPeek``), which hands back only a short digest of each page, never its bytes.

Why not only libvirt's own dirty-rate calculation: under TCG only its page-sampling mode reads
anything, and QEMU samples 512 pages per GiB, 64 of a 128 MiB guest. One dirtied sample is then
2 MiB/s over a 1 s window; the lab read guests dirtying 4, 16 and 32 MiB/s as 6-10, 7-18 and
20-36 MiB/s. A thousand pages read here cut that step eightfold. And no libvirt figure says how
much of the memory is zero pages, which the first pass sends as markers: the lab's 128 MiB
guests send about 85 MiB as whole pages, so a first pass priced at all of memory took half as
long again as it does.

The pages: every page number is a guest-physical address divided by 4 KiB, in RAM whatever the
x86 machine type: below 2 GiB (pc and q35 both map at least that much from 0, less the legacy
VGA and BIOS hole at 640 KiB-1 MiB), and, for a guest larger than 3.5 GiB, from 4 GiB on for
the memory that cannot be below (both machine types map RAM above 4 GiB then).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
LEGACY_HOLE = (0xA0000 // PAGE, 0x100000 // PAGE)  # VGA window and BIOS: not RAM
LOW_RAM_SAFE = 2 * GIB  # mapped from 0 on pc and q35 alike
HIGH_RAM_START = 4 * GIB
LOW_RAM_MOST = 7 * GIB // 2  # 3.5 GiB: the most either machine type maps below 4 GiB
ZERO_PAGE = b""  # the digest the port gives an all-zero page


def ram_ranges(memory_bytes: int) -> list[tuple[int, int]]:
    """Page-number ranges [start, end) that are surely RAM in a guest of this size."""
    low_end = min(memory_bytes, LOW_RAM_SAFE) // PAGE
    ranges = [(0, min(low_end, LEGACY_HOLE[0]))]
    if low_end > LEGACY_HOLE[1]:
        ranges.append((LEGACY_HOLE[1], low_end))
    if memory_bytes > LOW_RAM_MOST:
        start = HIGH_RAM_START // PAGE
        ranges.append((start, start + (memory_bytes - LOW_RAM_MOST) // PAGE))
    return [(a, b) for a, b in ranges if b > a]


def sample_pages(memory_bytes: int, count: int, rng: random.Random) -> list[int]:
    """``count`` distinct page numbers drawn evenly from :func:`ram_ranges` (fewer when the
    guest has fewer pages), in ascending order: read in one sweep, each page is read at the same
    offset into every pass, so every page's window between two passes is the same length."""
    ranges = ram_ranges(memory_bytes)
    total = sum(b - a for a, b in ranges)
    picks = rng.sample(range(total), min(count, total))
    pages = []
    for pick in sorted(picks):
        for a, b in ranges:
            if pick < b - a:
                pages.append(a + pick)
                break
            pick -= b - a
    return pages


@dataclass(frozen=True)
class Pass:
    """One read of every sampled page: the digests, and when the read began and ended
    (seconds on any one clock)."""

    digests: Sequence[bytes]
    started_s: float
    ended_s: float

    @property
    def middle_s(self) -> float:
        return (self.started_s + self.ended_s) / 2


@dataclass(frozen=True)
class Sampled:
    """What the sampled pages say: the share of memory that is zero pages, and the dirty rate
    over a short and a long window (distinct pages changed, scaled to all of memory)."""

    zero_share: float
    short_mib_s: float
    long_mib_s: float
    short_s: float
    long_s: float
    pages: int

    def whole_bytes(self, memory_bytes: int) -> int:
        """The memory a first pass sends as whole pages."""
        return round(memory_bytes * (1 - self.zero_share))


def changed_share(before: Sequence[bytes], after: Sequence[bytes]) -> float:
    """The share of sampled pages whose content changed between two passes."""
    if len(before) != len(after):
        raise ValueError(f"passes of {len(before)} and {len(after)} pages")
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before) if before else 0.0


def sampled(first: Pass, second: Pass, third: Pass, memory_bytes: int) -> Sampled:
    """The figures from three passes over the same pages: first to second is the short window,
    first to third the long one (each page's window is the distance between the passes'
    middles: every pass reads the pages in the same order at the same pace)."""
    short_s = second.middle_s - first.middle_s
    long_s = third.middle_s - first.middle_s
    if short_s <= 0 or long_s <= short_s:
        raise ValueError(f"passes out of order: windows of {short_s} and {long_s} s")
    zero = sum(d == ZERO_PAGE for d in first.digests) / len(first.digests) \
        if first.digests else 0.0

    def rate(after: Pass, window_s: float) -> float:
        return changed_share(first.digests, after.digests) * memory_bytes / MIB / window_s

    return Sampled(zero_share=zero, short_mib_s=rate(second, short_s),
                   long_mib_s=rate(third, long_s), short_s=short_s, long_s=long_s,
                   pages=len(first.digests))
