"""Subject names: host ids are single safe tokens, VM names encode reversibly into one token, and
the prefix is configurable."""

from __future__ import annotations

import re

import pytest

from baton.schemas.subjects import (
    AgentEndpoint,
    EventName,
    Subjects,
    host_id_from_hostname,
    is_host_id,
    micro_discovery,
    vm_name_from_token,
    vm_token,
)

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_%~-]+")
VM_NAMES = [
    "web-01",
    "web.example.com",
    "my vm",
    "tab\there",
    "new\nline",
    "wild*card>",
    "ünïcødé-虚拟机",
    "100%",
    "%2E",
    "a/b\\c",
    "x" * 255,
]


@pytest.mark.parametrize("host", ["h1", "node-2", "rack_3", "A", "x" * 64])
def test_subject_safe_host_ids_are_accepted(host: str) -> None:
    assert is_host_id(host)


@pytest.mark.parametrize("host", ["", "a.b", "a*", "a>", "a b", "tab\t", "ü", "x" * 65])
def test_host_ids_that_would_break_a_subject_are_rejected(host: str) -> None:
    assert not is_host_id(host)


def test_a_host_id_with_a_trailing_newline_is_rejected() -> None:
    assert not is_host_id("h1\n")


def test_subject_builders_refuse_an_invalid_host_id() -> None:
    with pytest.raises(ValueError, match="invalid host id"):
        Subjects().agent("h.1", AgentEndpoint.CAPS)


@pytest.mark.parametrize("name", VM_NAMES)
def test_a_vm_name_round_trips_through_its_token(name: str) -> None:
    assert name == vm_name_from_token(vm_token(name))


@pytest.mark.parametrize("name", VM_NAMES)
def test_a_vm_token_is_one_subject_token_without_wildcards_or_whitespace(name: str) -> None:
    assert _SAFE_TOKEN.fullmatch(vm_token(name)), vm_token(name)


def test_a_safe_vm_name_is_its_own_token() -> None:
    assert "web-01_a" == vm_token("web-01_a")


def test_distinct_vm_names_get_distinct_tokens() -> None:
    assert len(VM_NAMES) == len({vm_token(name) for name in VM_NAMES})


def test_an_event_subject_has_exactly_five_tokens_whatever_the_vm_name() -> None:
    subject = Subjects().events("h1", "web.example.com", EventName.LIFECYCLE)
    assert ["baton", "events", "h1", "web%2Eexample%2Ecom", "lifecycle"] == subject.split(".")


def test_the_default_prefix_is_baton() -> None:
    subjects = Subjects()
    assert "baton.agent.h1.caps" == subjects.agent("h1", AgentEndpoint.CAPS)
    assert "baton.agent.h1.cpu.compare" == subjects.agent("h1", AgentEndpoint.CPU_COMPARE)
    assert "baton.hosts.h1.heartbeat" == subjects.heartbeat("h1")


def test_the_prefix_is_configurable_and_may_have_several_tokens() -> None:
    subjects = Subjects("acme.baton")
    assert "acme.baton.agent.h1.status" == subjects.agent("h1", AgentEndpoint.STATUS)
    assert "acme.baton.events.h1.vm1.block_job" == subjects.events("h1", "vm1", EventName.BLOCK_JOB)
    assert "acme.baton.hosts.*.heartbeat" == subjects.heartbeats()


@pytest.mark.parametrize("prefix", ["", ".baton", "baton.", "a..b", "ba*", "b>", "ba ton"])
def test_an_invalid_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="invalid subject prefix"):
        Subjects(prefix)


def test_the_events_filter_matches_any_part_left_out() -> None:
    assert "baton.events.*.*.*" == Subjects().events_filter()
    assert "baton.events.h1.my%20vm.*" == Subjects().events_filter("h1", "my vm")


def test_micro_discovery_subjects_follow_the_micro_protocol() -> None:
    assert "$SRV.INFO.baton-agent" == micro_discovery("INFO", "baton-agent")
    assert "$SRV.PING" == micro_discovery("PING")


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("node1.lab.example.com", "node1"),
        ("node1", "node1"),
        ("my host", "my-host"),
        ("ünï", "-n-"),
        ("x" * 100, "x" * 64),
    ],
)
def test_host_id_from_hostname_takes_the_short_name_made_subject_safe(hostname: str, expected: str) -> None:
    assert expected == host_id_from_hostname(hostname)


def test_host_id_from_this_machine_s_hostname_is_valid() -> None:
    assert is_host_id(host_id_from_hostname())


def test_a_hostname_that_starts_with_a_dot_still_yields_a_host_id() -> None:
    assert "host" == host_id_from_hostname(".hidden")
