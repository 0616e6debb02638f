"""Sampling a guest's memory (agent/memory_sample.py): which pages are surely RAM, how pages are
drawn, and what three reads of them say (zero share, dirty rate over two windows)."""

from __future__ import annotations

import random

import pytest

from baton.agent.memory_sample import (
    ZERO_PAGE,
    Pass,
    changed_share,
    ram_ranges,
    sample_pages,
    sampled,
)

MIB, GIB = 1 << 20, 1 << 30
PAGES_PER_MIB = MIB // 4096


def test_a_small_guests_ram_is_all_of_its_memory_less_the_legacy_hole():
    assert [(0, 0xA0), (0x100, 128 * PAGES_PER_MIB)] == ram_ranges(128 * MIB)


def test_between_2_and_3_5_gib_only_the_low_2_gib_are_sure_on_every_machine_type():
    assert [(0, 0xA0), (0x100, 2 * GIB // 4096)] == ram_ranges(3 * GIB)


def test_a_guest_above_3_5_gib_has_the_rest_mapped_from_4_gib():
    high_start = 4 * GIB // 4096
    assert (high_start, high_start + (8 * GIB - 7 * GIB // 2) // 4096) == ram_ranges(8 * GIB)[-1]


def test_a_guest_smaller_than_the_legacy_hole_has_one_range():
    assert [(0, 0x80)] == ram_ranges(512 * 1024)


def test_sampled_pages_are_distinct_ascending_and_inside_ram():
    pages = sample_pages(8 * GIB, 1024, random.Random(7))
    ranges = ram_ranges(8 * GIB)
    assert (1024, pages) == (len(set(pages)), sorted(pages))
    assert all(any(a <= p < b for a, b in ranges) for p in pages)
    assert any(p >= ranges[-1][0] for p in pages)  # the memory above 4 GiB is sampled too


def test_a_guest_with_fewer_pages_than_asked_gives_every_page():
    pages = sample_pages(2 * MIB, 1024, random.Random(1))
    assert pages == [p for a, b in ram_ranges(2 * MIB) for p in range(a, b)]


def digests(*marks: str) -> list[bytes]:
    """'0' an all-zero page, else a page's content by its mark."""
    return [ZERO_PAGE if m == "0" else m.encode() for m in marks]


def test_three_passes_give_the_zero_share_and_both_windows_rates():
    first = Pass(digests("0", "0", "a", "b", "c", "d", "e", "f"), 0.0, 0.5)
    second = Pass(digests("0", "0", "A", "b", "c", "d", "e", "f"), 1.0, 1.5)  # 1 of 8 changed
    third = Pass(digests("0", "0", "A", "B", "c", "d", "e", "f"), 2.0, 2.5)  # 2 of 8
    found = sampled(first, second, third, 128 * MIB)
    assert (0.25, 1.0, 2.0, 8) == (found.zero_share, found.short_s, found.long_s, found.pages)
    assert (16.0, 16.0) == (found.short_mib_s, found.long_mib_s)  # 16 MiB over 1 s, 32 over 2
    assert 96 * MIB == found.whole_bytes(128 * MIB)


def test_a_page_that_became_zero_or_left_zero_counts_as_changed():
    assert 0.5 == changed_share(digests("0", "a", "b", "c"), digests("x", "0", "b", "c"))


def test_windows_are_measured_between_the_middles_of_the_reads():
    first, second, third = (Pass(digests("a"), s, s + 1.0) for s in (0.0, 1.0, 2.5))
    found = sampled(first, second, third, 128 * MIB)
    assert (1.0, 2.5) == (found.short_s, found.long_s)


@pytest.mark.parametrize("starts", [(0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 2.0)])
def test_passes_out_of_order_are_refused(starts):
    first, second, third = (Pass(digests("a"), s, s) for s in starts)
    with pytest.raises(ValueError, match="out of order"):
        sampled(first, second, third, 128 * MIB)


def test_passes_over_different_pages_are_refused():
    with pytest.raises(ValueError, match="passes of 2 and 1 pages"):
        changed_share(digests("a", "b"), digests("a"))


def test_a_guest_of_exactly_1_mib_has_no_empty_range_after_the_hole():
    assert [(0, 0xA0)] == ram_ranges(MIB)


class Picks:
    """An rng whose sample is given: the picks, as indexes into all the RAM pages."""

    def __init__(self, *picks: int):
        self.picks = list(picks)

    def sample(self, population, k):
        assert len(self.picks) == k <= len(population)
        return self.picks


def test_picks_map_onto_the_ranges_in_order_across_both_holes():
    low, high = ram_ranges(8 * GIB)[1:]
    below = 0xA0 + (low[1] - low[0])  # pages below 4 GiB
    total = below + high[1] - high[0]
    pages = sample_pages(8 * GIB, 5, Picks(total - 1, 0, 0x9F, 0xA0, below))
    assert [0, 0x9F, 0x100, high[0], high[1] - 1] == pages


def test_empty_passes_have_nothing_changed_and_nothing_zero():
    assert 0.0 == changed_share([], [])
    found = sampled(Pass([], 0.0, 0.0), Pass([], 1.0, 1.0), Pass([], 2.0, 2.0), 128 * MIB)
    assert (0.0, 0.0, 0.0, 0) == (found.zero_share, found.short_mib_s, found.long_mib_s,
                                  found.pages)


def test_a_guest_smaller_than_a_page_has_no_ram_to_sample():
    assert [] == ram_ranges(2048)
