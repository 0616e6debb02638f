"""Every request deadline, in seconds, in one table (nats-py's own default of 0.5 s is too short).

Agents answer capability queries from cached facts; anything that touches libvirt gets more room
because a busy libvirtd under TCG can take seconds.
"""

from __future__ import annotations

from typing import Final

AGENT_CAPS: Final = 10.0
AGENT_CPU_COMPARE: Final = 15.0
AGENT_CPU_BASELINE: Final = 30.0  # one libvirt baseline, then one expansion per guest CPU
AGENT_STORAGE_PROBE: Final = 10.0
AGENT_DOMAINS: Final = 10.0
AGENT_STATUS: Final = 3.0
# At start-up an agent asks its own host's caps: nobody answers at once when the host is free.
AGENT_IDENTITY_PROBE: Final = 3.0
# How long discovery waits for $SRV.INFO answers after the last one arrived.
DISCOVERY_QUIET: Final = 0.3
DISCOVERY_MAX: Final = 2.0

# --- coordinator -> agent migration endpoints ----------------------------------------------------
AGENT_MIGRATION_PREPARE: Final = 60.0  # qemu-img create per disk (thin, so quick)
AGENT_MIGRATION_START: Final = 10.0  # answers at once; the migration runs on afterwards
AGENT_MIGRATION_SPEED: Final = 10.0
AGENT_MIGRATION_ABORT: Final = 10.0
AGENT_MIGRATION_CLEANUP: Final = 60.0  # may destroy a domain and delete disk files
AGENT_MIGRATION_STATUS: Final = 10.0  # a few libvirt reads and stats
AGENT_MIGRATION_PREDICT: Final = 30.0  # two dirty-rate measurements, up to 15 s, then arithmetic

# --- coordinator -> agent storage-move endpoints ------------------------------------------------
AGENT_STORAGE_MOVE: Final = 15.0  # checks the domain and the paths, answers; the copy runs on
AGENT_STORAGE_ABORT: Final = 40.0  # cancels the copy jobs and removes the partial copies

# --- clients -> coordinator ----------------------------------------------------------------------
COORDINATOR_MIGRATE: Final = 60.0  # a dry run answers with the whole pre-flight report
COORDINATOR_CHECK: Final = 60.0
COORDINATOR_ABORT: Final = 40.0  # the coordinator waits up to ABORT_SETTLE for the outcome
COORDINATOR_BANDWIDTH: Final = 15.0
COORDINATOR_JOBS: Final = 5.0
COORDINATOR_DRAIN: Final = 120.0  # places every VM of the host, one after the other
COORDINATOR_STORAGE_MOVE: Final = 60.0  # a dry run answers with the whole check report

# --- coordinator's own deadlines (seconds) -------------------------------------------------------
SOURCE_SILENCE_LIMIT: Final = 60.0  # no progress or outcome from the source agent: give up
# A source agent quiet this long is asked whether it still runs the job: one that restarted
# says no, and the outcome is read from libvirt's facts at once rather than after the limit.
SOURCE_QUIET_PROBE: Final = 5.0
FACTS_SETTLE: Final = 120.0  # a silent source: wait this long for libvirt's job to end
ABORT_SETTLE: Final = 30.0  # after asking the source to abort, wait this long for its outcome
CONFIRM_WINDOW: Final = 15.0  # completion: keep re-asking both agents this long
CONFIRM_POLL: Final = 0.5
PROGRESS_MAX_GAP: Final = 0.5  # republish the last progress after this much silence (>= 1/s)
SHUTDOWN_GRACE: Final = 30.0  # SIGTERM: let running migrations finish this long, then abort
SHUTDOWN_ROLLBACK: Final = 60.0  # then wait this long for aborts and roll-backs to finish
