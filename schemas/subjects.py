"""Every NATS subject Baton uses comes from here; no subject literal lives anywhere else.

Layout (``baton`` is the configurable prefix):

- ``baton.agent.<host>.<endpoint>``          request/reply endpoints of one host's agent
- ``baton.events.<host>.<vm>.<event>``       libvirt events of one VM on one host
- ``baton.hosts.<host>.heartbeat``           periodic liveness of one host's agent
- ``baton.hosts.<host>.jobs.<id>.<event>``   one agent's reports on a job it runs (progress, outcome)
- ``baton.coordinator.<endpoint>``           the coordinator's public request/reply API
- ``baton.migrations.<id>.<event>``          the coordinator's phases and progress of one migration
- ``$SRV.PING|INFO|STATS[.baton-agent]``     NATS micro discovery (fixed by the micro protocol)

VM names may hold characters that are not subject-safe; :func:`vm_token` encodes them
reversibly (``%XX`` for every byte outside ``[A-Za-z0-9_-]``) and event payloads carry the name.
"""

from __future__ import annotations

import re
import socket
from enum import StrEnum
from urllib.parse import quote, unquote

DEFAULT_PREFIX = "baton"
AGENT_SERVICE = "baton-agent"
COORDINATOR_SERVICE = "baton-coordinator"
JOBS_BUCKET = "baton-jobs"  # the default prefix's (Subjects.jobs_bucket)

_HOST_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class AgentEndpoint(StrEnum):
    CAPS = "caps"  # host capabilities
    CPU_COMPARE = "cpu.compare"  # can this host run a guest CPU definition
    CPU_BASELINE = "cpu.baseline"  # the hosts' CPU baseline, and which guest CPUs it runs
    STORAGE_PROBE = "storage.probe"  # path facts and the shared-storage token probe
    DOMAINS = "domains"  # the host's domains with disks and interfaces
    STATUS = "status"  # agent liveness, libvirt connection, last heartbeat
    MIGRATION_PREPARE = "migration.prepare"  # destination: pre-create disks for a copy
    MIGRATION_START = "migration.start"  # source: run the migration (answers at once)
    MIGRATION_SPEED = "migration.speed"  # source: change the bandwidth cap while running
    MIGRATION_ABORT = "migration.abort"  # source: cancel the running migration job
    MIGRATION_CLEANUP = "migration.cleanup"  # either side: remove a leftover domain or disks
    MIGRATION_STATUS = "migration.status"  # either side: libvirt's and the ledger's facts
    MIGRATION_PREDICT = "migration.predict"  # source: measure the dirty rate, predict the move
    STORAGE_MOVE = "storage.move"  # copy, pivot and verify a VM's disks into another pool
    STORAGE_ABORT = "storage.abort"  # cancel a storage move before its pivot


class CoordinatorEndpoint(StrEnum):
    MIGRATE = "migrate"
    CHECK = "check"
    ABORT = "abort"
    BANDWIDTH = "bandwidth"
    JOBS = "jobs"
    STORAGE_MOVE = "storage.move"  # move a running VM's disks to another pool on its host
    DRAIN = "drain"  # move every running VM off a host (or abort such a drain)


class MigrationEvent(StrEnum):
    # The coordinator's, on baton.migrations.<id>.<event> (Subjects.migration):
    PHASE = "phase"  # coordinator: every phase change, with the whole record
    PROGRESS = "progress"  # coordinator: figures at least once a second while data moves
    # An agent's, on baton.hosts.<host>.jobs.<id>.<event> (Subjects.agent_report): under the
    # host's own subtree, so NATS permissions let only that host's agent publish them.
    SOURCE_PROGRESS = "source.progress"  # source agent: raw job statistics
    SOURCE_FINISHED = "source.finished"  # source agent: the migrate call returned
    STORAGE_STAGE = "storage.stage"  # storage move's agent: copying, ready, pivoted
    STORAGE_FINISHED = "storage.finished"  # storage move's agent: the outcome, once


class EventName(StrEnum):
    LIFECYCLE = "lifecycle"
    JOB_COMPLETED = "job_completed"
    MIGRATION_ITERATION = "migration_iteration"
    BLOCK_JOB = "block_job"


def is_host_id(value: str) -> bool:
    return bool(_HOST_ID_RE.fullmatch(value)) and len(value) <= 64


def host_id_from_hostname(hostname: str | None = None) -> str:
    """Derive a host id from the short hostname, replacing anything not subject-safe with '-'."""
    short = (hostname or socket.gethostname()).split(".")[0]
    token = re.sub(r"[^A-Za-z0-9_-]", "-", short)[:64]
    return token or "host"


def vm_token(vm_name: str) -> str:
    """Subject token for a VM name: unchanged when safe, else percent-encoded (dots too)."""
    if not vm_name:
        raise ValueError("a VM name cannot be empty")
    return quote(vm_name, safe="-_").replace(".", "%2E").replace("~", "%7E")


def vm_name_from_token(token: str) -> str:
    return unquote(token)


class Subjects:
    """Subject names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"invalid subject prefix {prefix!r}: use dot-separated [A-Za-z0-9_-] tokens")
        self.prefix = prefix

    def agent(self, host: str, endpoint: AgentEndpoint) -> str:
        return f"{self.prefix}.agent.{_checked_host(host)}.{endpoint.value}"

    def events(self, host: str, vm: str, event: EventName) -> str:
        return f"{self.prefix}.events.{_checked_host(host)}.{vm_token(vm)}.{event.value}"

    def events_filter(self, host: str = "*", vm: str | None = None, event: str = "*") -> str:
        """Wildcard subscription for events; omit a part to match any."""
        vm_part = "*" if vm is None else vm_token(vm)
        return f"{self.prefix}.events.{host}.{vm_part}.{event}"

    def heartbeat(self, host: str) -> str:
        return f"{self.prefix}.hosts.{_checked_host(host)}.heartbeat"

    def heartbeats(self) -> str:
        return f"{self.prefix}.hosts.*.heartbeat"

    def agent_report(self, host: str, migration_id: str, event: MigrationEvent) -> str:
        """An agent's report on a job it runs: only ``host``'s agent may publish here."""
        return (f"{self.prefix}.hosts.{_checked_host(host)}.jobs.{_checked_token(migration_id)}"
                f".{event.value}")

    def coordinator(self, endpoint: CoordinatorEndpoint) -> str:
        return f"{self.prefix}.coordinator.{endpoint.value}"

    def migration(self, migration_id: str, event: MigrationEvent) -> str:
        return f"{self.prefix}.migrations.{_checked_token(migration_id)}.{event.value}"

    @property
    def jobs_bucket(self) -> str:
        """The JetStream KV bucket of the coordinator's records (``baton-jobs``; one per prefix,
        so meshes with their own prefix on one NATS keep their own records)."""
        return self.prefix.replace(".", "-") + "-jobs"

    @property
    def leader_bucket(self) -> str:
        """The JetStream KV bucket of the coordinators' leadership lease (``baton-leader``)."""
        return self.prefix.replace(".", "-") + "-leader"

    def migrations_filter(self, migration_id: str = "*", event: str = ">") -> str:
        return f"{self.prefix}.migrations.{migration_id}.{event}"


def micro_discovery(verb: str, service: str | None = None) -> str:
    """``$SRV.<verb>[.<service>]``: the NATS micro discovery subjects (prefix fixed by NATS)."""
    return f"$SRV.{verb}" if service is None else f"$SRV.{verb}.{service}"


def _checked_token(value: str) -> str:
    if not is_host_id(value):
        raise ValueError(f"invalid subject token {value!r}: use letters, digits, '-' or '_'")
    return value


def _checked_host(host: str) -> str:
    if not is_host_id(host):
        raise ValueError(f"invalid host id {host!r}: use letters, digits, '-' or '_'")
    return host
