"""Pre-flight: gather facts from both agents, then judge them with pure check functions.

:func:`gather` is the only part that does I/O (read-only, apart from a token file it writes
beside the VM's disks on the source and removes again). Every ``check_*`` function is pure:
``Facts -> CheckResult`` with a reason a person can act on. All checks run and are reported
together; the migration goes ahead only when none failed.

Storage: a token written by the source agent beside each disk directory and read back by the
destination agent proves the destination sees the same files. ``auto`` resolves to ``shared`` when
every disk is proven shared, else to ``copy`` (of exactly the local disks).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from baton.coordinator.agents import AgentClient
from baton.coordinator.options import auto_choice, postcopy_switch
from baton.coordinator.storage_checks import unsized_warnings
from baton.schemas.agent import (
    CpuCompareReply,
    DiskInfo,
    DomainInfo,
    DomainState,
    HostCaps,
    PathProbe,
    StorageProbeRequest,
    TokenAction,
    TokenOp,
)
from baton.schemas.errors import BatonError, ErrorCode
from baton.schemas.migration import (
    CheckName,
    CheckRequest,
    CheckResult,
    CheckStatus,
    MigrateRequest,
    PostcopySwitch,
    Prediction,
    PredictRequest,
    PreflightReport,
    StorageMode,
    Strategy,
)

GIB = 1024**3


@dataclass(frozen=True)
class Intent:
    """How the migration means to run, as far as the checks care."""

    strategy: Strategy = Strategy.PRECOPY
    postcopy: PostcopySwitch = PostcopySwitch.OFF  # when it would switch to post-copy
    predict: bool = False  # have the source measure the dirty rate and predict the move
    bandwidth_mib_s: int | None = None  # the prediction's link rate
    max_downtime_ms: int | None = None
    target_pool: str | None = None  # the destination pool for every copied disk
    disk_pools: dict[str, str] = field(default_factory=dict)  # per disk target; wins

    def pool_for(self, target: str) -> str | None:
        return self.disk_pools.get(target, self.target_pool)

    @property
    def pools_asked(self) -> bool:
        return self.target_pool is not None or bool(self.disk_pools)


@dataclass(frozen=True)
class DiskView:
    """One file-backed disk of the VM and what the destination sees of it."""

    disk: DiskInfo
    shared: bool  # the destination read the token the source wrote beside it
    on_destination: PathProbe | None = None  # the destination's facts at destination_path
    landing: str | None = None  # where a copy lands when the request puts it in another pool

    @property
    def path(self) -> str:
        return self.disk.source_path or ""

    @property
    def destination_path(self) -> str:
        return self.landing or self.path

    @property
    def copyable(self) -> bool:
        """A local, writable disk a shared-nothing migration copies."""
        return not self.shared and not self.disk.readonly and not self.disk.shareable


@dataclass(frozen=True)
class Facts:
    vm: str
    source: str
    destination: str
    live: bool
    requested_storage: StorageMode
    domain: DomainInfo
    destination_caps: HostCaps
    on_destination: DomainInfo | None  # the VM as the destination sees it, if defined there
    disks: list[DiskView] = field(default_factory=list)
    probe_error: str | None = None
    cpu: CpuCompareReply | None = None
    cpu_error: BatonError | None = None
    tls: bool = True  # the request wants the stream encrypted when both hosts can
    source_caps: HostCaps | None = None  # None: the source's agent did not say (then no TLS)
    intent: Intent = field(default_factory=Intent)
    prediction: Prediction | None = None  # the source's, when the intent asks for one
    prediction_error: str | None = None  # why there is none, when asked for


def intent_of(request: MigrateRequest | CheckRequest, predict: bool) -> Intent:
    return Intent(strategy=request.strategy,
                  postcopy=postcopy_switch(request.strategy, request.allow_postcopy),
                  predict=predict and request.live, bandwidth_mib_s=request.bandwidth_mib_s,
                  max_downtime_ms=request.max_downtime_ms, target_pool=request.target_pool,
                  disk_pools=dict(request.disk_pools))


# --- gathering (I/O) --------------------------------------------------------------------------


async def gather(agents: AgentClient, vm: str, source: str, destination: str, live: bool,
                 storage: StorageMode, tls: bool = True, intent: Intent | None = None) -> Facts:
    """Ask both agents everything the checks need. Raises for an unknown VM or host."""
    intent = intent or Intent()
    domain, caps, on_destination, source_caps = await asyncio.gather(
        agents.domain(source, vm, include_cpu_xml=True), agents.caps(destination),
        agents.domain_or_none(destination, vm), agents.caps(source))
    disks, probe_error = await probe_disks(agents, source, destination, domain,
                                           landings(domain, caps, intent))
    cpu, cpu_error = await compare_cpu(agents, vm, source, destination)
    facts = Facts(vm=vm, source=source, destination=destination, live=live,
                  requested_storage=storage, domain=domain, destination_caps=caps,
                  on_destination=on_destination, disks=disks, probe_error=probe_error,
                  cpu=cpu, cpu_error=cpu_error, tls=tls, source_caps=source_caps,
                  intent=intent)
    if facts.intent.predict and domain.state == DomainState.RUNNING:
        facts = await predict(agents, facts)
    return facts


async def predict(agents: AgentClient, facts: Facts) -> Facts:
    """The source's prediction, at the cap and limit asked for; a copy sends its disks first,
    each at its whole virtual size: QEMU's mirror goes through unallocated clusters too, under
    the same cap (in the lab a 64 MiB qcow2 with a few MiB allocated counted 64 MiB processed and
    took 64 MiB's time at the cap)."""
    copied = resolved_storage(facts) == StorageMode.COPY
    disk_bytes = sum(d.disk.capacity_bytes or d.disk.allocation_bytes
                     for d in facts.disks if copied and d.copyable)
    intent = facts.intent
    try:
        prediction = await agents.predict(facts.source, PredictRequest(
            vm=facts.vm, link_mib_s=intent.bandwidth_mib_s, max_downtime_ms=intent.max_downtime_ms,
            allow_postcopy=intent.postcopy is not PostcopySwitch.OFF, disk_bytes=disk_bytes))
    except BatonError as exc:
        return replace(facts, prediction_error=exc.message)
    return replace(facts, prediction=prediction)


def landings(domain: DomainInfo, caps: HostCaps, intent: Intent) -> dict[str, str]:
    """Where each disk asked into a destination pool lands there: the pool's directory, the
    file's name. A pool the destination lacks gives no landing (check_storage says why)."""
    pools = {p.name: p for p in caps.pools if p.target_path and p.active}
    found = {}
    for disk in domain.disks:
        if disk.readonly or disk.shareable:  # never copied; check_storage refuses them by name
            continue
        asked = intent.pool_for(disk.target)
        pool = pools.get(asked) if asked else None
        if pool is not None and pool.target_path and disk.source_path:
            landing = os.path.join(pool.target_path, os.path.basename(disk.source_path))
            if landing != disk.source_path:
                found[disk.target] = landing
    return found


async def probe_disks(agents: AgentClient, source: str, destination: str, domain: DomainInfo,
                      landing: dict[str, str] | None = None) -> tuple[list[DiskView], str | None]:
    by_dir: dict[str, list[DiskInfo]] = defaultdict(list)
    for disk in domain.disks:
        if disk.source_path:
            by_dir[os.path.dirname(disk.source_path)].append(disk)
    views: list[DiskView] = []
    try:
        for disks in by_dir.values():
            views += await _probe_directory(agents, source, destination, disks, landing or {})
    except BatonError as exc:
        unprobed = [DiskView(d, shared=False) for ds in by_dir.values() for d in ds]
        return unprobed, exc.message
    return views, None


async def _probe_directory(agents: AgentClient, source: str, destination: str,
                           disks: list[DiskInfo], landing: dict[str, str]) -> list[DiskView]:
    beside = disks[0].source_path or ""
    token = secrets.token_urlsafe(18)
    written = await agents.storage_probe(source, StorageProbeRequest(
        token=TokenOp(action=TokenAction.WRITE, beside=beside, token=token)))
    if written.token is None or not written.token.ok:
        detail = written.token.detail if written.token else "no answer"
        raise BatonError(ErrorCode.UNAVAILABLE,
                         f"the source could not write a probe token beside {beside}: {detail}")
    try:
        read = await agents.storage_probe(destination, StorageProbeRequest(
            paths=[landing.get(d.target, d.source_path or "") for d in disks],
            token=TokenOp(action=TokenAction.READ, beside=beside, token=token)))
    finally:
        await agents.storage_probe(source, StorageProbeRequest(
            token=TokenOp(action=TokenAction.REMOVE, beside=beside, token=token)))
    shared = read.token is not None and read.token.ok
    probes = {p.path: p for p in read.paths}
    views = [DiskView(d, shared, landing=landing.get(d.target)) for d in disks]
    return [replace(v, on_destination=probes.get(v.destination_path)) for v in views]


async def compare_cpu(agents: AgentClient, vm: str, source: str,
                      destination: str) -> tuple[CpuCompareReply | None, BatonError | None]:
    try:
        return await agents.cpu_compare(destination, vm, source), None
    except BatonError as exc:
        return None, exc


# --- pure checks ------------------------------------------------------------------------------


def resolved_storage(facts: Facts) -> StorageMode:
    if facts.requested_storage != StorageMode.AUTO:
        return facts.requested_storage
    if facts.probe_error is None and all(d.shared for d in facts.disks):
        return StorageMode.SHARED
    return StorageMode.COPY


def _result(name: CheckName, problems: list[str], ok_reason: str,
            warnings: list[str] | None = None) -> CheckResult:
    if problems:
        return CheckResult(name=name, status=CheckStatus.FAIL, reason="; ".join(problems))
    if warnings:
        return CheckResult(name=name, status=CheckStatus.WARN, reason="; ".join(warnings))
    return CheckResult(name=name, status=CheckStatus.PASS, reason=ok_reason)


def check_hosts(facts: Facts) -> CheckResult:
    if facts.source == facts.destination:
        return _result(CheckName.HOSTS, [f"source and destination are both {facts.source!r}: "
                                         "choose another destination"], "")
    return _result(CheckName.HOSTS, [], f"{facts.source} -> {facts.destination} "
                   f"({facts.destination_caps.migration_uri}); both agents answer")


def check_vm(facts: Facts) -> CheckResult:
    problems = []
    there = facts.on_destination
    if there is not None:
        problems.append(f"{facts.vm} is already defined on {facts.destination} ({there.state}): "
                        "undefine it there first or choose another destination")
    if facts.live and not facts.domain.active:
        problems.append(f"{facts.vm} is {facts.domain.state} on {facts.source}: start it, or "
                        "migrate it offline (--offline)")
    if not facts.live and facts.domain.active:
        problems.append(f"{facts.vm} is {facts.domain.state} on {facts.source}: an offline "
                        "migration needs it shut off; shut it down or migrate it live")
    return _result(CheckName.VM, problems,
                   f"{facts.vm} is {facts.domain.state} on {facts.source}, absent on "
                   f"{facts.destination}")


def check_storage(facts: Facts) -> CheckResult:
    if facts.probe_error is not None:
        return _result(CheckName.STORAGE, [f"could not probe the disks: {facts.probe_error}"], "")
    asked = pool_request_problems(facts)
    if not facts.disks:
        return _result(CheckName.STORAGE, asked, "the VM has no file-backed disks")
    shared = resolved_storage(facts) == StorageMode.SHARED
    result = _shared_storage(facts) if shared else _copy_storage(facts)
    if not asked:
        return result
    return _result(CheckName.STORAGE, asked + ([result.reason] if result.status ==
                                               CheckStatus.FAIL else []), "")


def pool_request_problems(facts: Facts) -> list[str]:
    """``--target-pool`` / ``--disk-map``: every pool named exists on the destination as an
    active directory, every disk named is one the migration copies, and something is copied."""
    intent, destination = facts.intent, facts.destination
    if not intent.pools_asked:
        return []
    pools = {p.name: p for p in facts.destination_caps.pools}
    problems = []
    for name in sorted({*intent.disk_pools.values(), *filter(None, [intent.target_pool])}):
        pool = pools.get(name)
        if pool is None:
            problems.append(f"{destination} has no storage pool {name!r} (its pools: "
                            f"{', '.join(sorted(pools)) or 'none'})")
        elif not pool.active:
            problems.append(f"pool {name} is inactive on {destination}: virsh pool-start {name}")
        elif not pool.target_path:
            problems.append(f"pool {name} ({pool.type}) on {destination} has no directory; "
                            "Baton copies into directory-backed pools only")
    views = {d.disk.target: d for d in facts.disks}
    copied = resolved_storage(facts) == StorageMode.COPY
    for target in sorted(intent.disk_pools):
        view = views.get(target)
        if view is None:
            problems.append(f"{facts.vm} has no file-backed disk {target} (its disks: "
                            f"{', '.join(sorted(views)) or 'none'})")
        elif not (copied and view.copyable):
            why = "is on storage both hosts see" if view.shared else "is read-only or shareable"
            problems.append(f"{target} ({view.path}) {why}, so it is not copied: only a copied "
                            "disk goes into another pool")
    if intent.target_pool is not None and not (copied and any(d.copyable for d in facts.disks)):
        problems.append(f"nothing is copied, so nothing goes into pool {intent.target_pool}: "
                        f"{facts.vm}'s disks are on storage both hosts see (or read-only)")
    landed: dict[str, list[str]] = defaultdict(list)
    for view in facts.disks:
        if copied and view.copyable:
            landed[view.destination_path].append(view.disk.target)
    problems += [f"{' and '.join(targets)} would both land at {path} on {destination}: "
                 "map them to different pools" for path, targets in landed.items()
                 if len(targets) > 1]
    return problems


def _shared_storage(facts: Facts) -> CheckResult:
    unseen = [d.path for d in facts.disks if not d.shared]
    problems = [f"{facts.destination} does not see {', '.join(unseen)} (a token the source wrote "
                "beside it was not found there): put the disks on storage both hosts mount, or "
                "migrate with --copy-storage"] if unseen else []
    return _result(CheckName.STORAGE, problems, f"{facts.destination} sees all "
                   f"{len(facts.disks)} disk file(s) (shared storage proven by a token)")


def _copy_storage(facts: Facts) -> CheckResult:
    problems = [_missing_readonly(d, facts.destination) for d in facts.disks
                if not d.shared and not d.copyable
                and not (d.on_destination and d.on_destination.exists)]
    to_copy = [d for d in facts.disks if d.copyable]
    if to_copy and not facts.domain.active:
        # libvirt copies disks only through a running QEMU (NBD); refuse here, before the
        # destination is prepared, not at the start call after it was.
        problems.append(f"{facts.vm} is {facts.domain.state} and its disks "
                        f"{', '.join(d.path for d in to_copy)} are not on storage "
                        f"{facts.destination} sees: libvirt cannot copy the disks of a domain "
                        "that is not running; start it and migrate it live with --copy-storage, "
                        "or put the disks on shared storage")
    problems += [f"{d.destination_path} already exists on {facts.destination}: remove it there "
                 "or move the VM elsewhere" for d in to_copy
                 if d.on_destination and d.on_destination.exists]
    by_dir: dict[str, list[DiskView]] = defaultdict(list)
    for d in to_copy:
        by_dir[os.path.dirname(d.destination_path)].append(d)
    problems += [p for directory, disks in by_dir.items()
                 if (p := _pool_problem(facts, directory, disks))]
    total = sum(d.disk.capacity_bytes for d in to_copy)
    elsewhere = "".join(f"; {d.disk.target} into {d.destination_path}"
                        for d in to_copy if d.landing)
    return _result(CheckName.STORAGE, problems, f"copy {len(to_copy)} local disk(s), "
                   f"{total / GIB:.1f} GiB, into pools on {facts.destination}{elsewhere}"
                   if to_copy else "every disk is on shared storage; nothing to copy",
                   unsized_warnings([d.disk for d in to_copy], f"on {facts.destination}"))


def _missing_readonly(disk: DiskView, destination: str) -> str:
    return (f"{disk.path} (read-only or shareable, so not copied) is missing on {destination}: "
            "copy it there first or detach it")


def _pool_problem(facts: Facts, directory: str, disks: list[DiskView]) -> str | None:
    pools = [p for p in facts.destination_caps.pools
             if p.target_path and p.target_path.rstrip("/") == directory.rstrip("/")]
    active = [p for p in pools if p.active]
    if not active:
        return (f"{facts.destination} has no active storage pool at {directory} for "
                f"{', '.join(d.path for d in disks)}: define and start one there "
                f"(virsh pool-define-as NAME dir --target {directory}), or copy into another "
                "pool (--target-pool POOL)")
    need = sum(d.disk.capacity_bytes for d in disks)
    best = max(active, key=lambda p: p.available_bytes)
    if best.available_bytes < need:
        return (f"pool {best.name} on {facts.destination} has {best.available_bytes / GIB:.1f} "
                f"GiB available, the disks need {need / GIB:.1f} GiB: free space there")
    return None


def check_network(facts: Facts) -> CheckResult:
    caps = facts.destination_caps
    bridges = {b.name: b for b in caps.bridges}
    at_source = {b.name: b for b in facts.source_caps.bridges} if facts.source_caps else {}
    networks = {n.name: n for n in caps.networks}
    problems, warnings = [], []
    for nic in facts.domain.interfaces:
        if nic.type == "bridge":
            bridge = bridges.get(nic.source or "")
            if bridge is None or not bridge.up:
                state = "is down" if bridge else "does not exist"
                problems.append(f"bridge {nic.source} {state} on {facts.destination}: create "
                                "it there or attach the VM to a bridge both hosts have")
            elif (here := at_source.get(bridge.name)) is not None and bridge.mtu < here.mtu:
                # The guest keeps its MTU: frames it sends larger than the destination's bridge
                # carries are dropped there, a network outage that starts at the switch-over.
                problems.append(f"bridge {bridge.name} carries MTU {bridge.mtu} on "
                                f"{facts.destination} but {here.mtu} on {facts.source}: the "
                                "guest's larger frames would be dropped there (ip link set "
                                f"{bridge.name} mtu {here.mtu} on {facts.destination})")
        elif nic.type == "network":
            net = networks.get(nic.source or "")
            if net is None or not net.active:
                state = "is inactive" if net else "is not defined"
                problems.append(f"libvirt network {nic.source} {state} on {facts.destination}: "
                                f"virsh net-start {nic.source} there (or define it)")
        else:
            warnings.append(f"interface type {nic.type!r} ({nic.source}) is not checked")
    names = ", ".join(f"{n.source}" for n in facts.domain.interfaces)
    passed = (f"{names}: present and up on {facts.destination}" if names
              else "the VM has no network interfaces: nothing to check")
    return _result(CheckName.NETWORK, problems, passed, warnings)


def check_cpu(facts: Facts) -> CheckResult:
    if facts.cpu_error is not None:
        err = facts.cpu_error
        if err.code == ErrorCode.UNSUPPORTED:
            return _result(CheckName.CPU, [], "", [f"{facts.destination} cannot compare guest "
                                                   f"CPUs ({err.message}); not checked"])
        return _result(CheckName.CPU, [f"the CPU comparison on {facts.destination} failed: "
                                       f"{err.message}"], "")
    cpu = facts.cpu
    if cpu is None or cpu.runnable:
        return _result(CheckName.CPU, [], f"{facts.destination} can run the guest CPU"
                       + (f" ({cpu.result}: {cpu.reason})" if cpu else ""))
    problem = (f"{facts.destination} cannot run the guest CPU: {cpu.reason}; use a guest CPU "
               "model both hosts support (e.g. a named model instead of host-passthrough)")
    if not facts.live:
        return _result(CheckName.CPU, [], "", [problem + " (offline: it would not start there)"])
    return _result(CheckName.CPU, [problem], "")


def check_memory(facts: Facts) -> CheckResult:
    need = facts.domain.memory_kib * 1024
    available = facts.destination_caps.memory.available_bytes
    ok = f"{facts.destination} has {available / GIB:.1f} GiB available, the VM needs {need / GIB:.1f} GiB"
    if available >= need:
        return _result(CheckName.MEMORY, [], ok)
    short = (f"{facts.destination} has {available / GIB:.1f} GiB available but the VM needs "
             f"{need / GIB:.1f} GiB: free memory there or choose another destination")
    if not facts.live:
        return _result(CheckName.MEMORY, [], "", [short + " (offline: only to start it there)"])
    return _result(CheckName.MEMORY, [short], ok)


def check_devices(facts: Facts) -> CheckResult:
    blockers = facts.domain.migration_blockers
    problems = [f"{b} blocks migration: detach it first" for b in blockers]
    return _result(CheckName.DEVICES, problems, "no device blocks migration")


def migration_tls(facts: Facts) -> bool:
    """Encrypt the stream: asked for, and QEMU on both hosts has its TLS certificates."""
    return (facts.tls and facts.source_caps is not None and facts.source_caps.migration_tls
            and facts.destination_caps.migration_tls)


def check_encryption(facts: Facts) -> CheckResult:
    """Never a failure: an unencrypted stream is the operator's call, but always said."""
    if migration_tls(facts):
        return _result(CheckName.ENCRYPTION, [], "the migration stream is encrypted (TLS)")
    if not facts.tls:
        return _result(CheckName.ENCRYPTION, [], "", [
            "--no-tls: guest memory and disks cross the network unencrypted"])
    lacking = [host for host, caps in ((facts.source, facts.source_caps),
                                       (facts.destination, facts.destination_caps))
               if caps is None or not caps.migration_tls]
    return _result(CheckName.ENCRYPTION, [], "", [
        f"{' and '.join(lacking)} has no QEMU migration TLS certificates "
        "(qemu.conf migrate_tls_x509_cert_dir): guest memory and disks cross the network "
        "unencrypted"])


_POSTCOPY_WHEN = {
    PostcopySwitch.AFTER_FIRST_PASS: "strategy postcopy switches after the first pass",
    PostcopySwitch.WHEN_STALLED: "strategy auto with --allow-postcopy switches once raising the "
    "downtime limit no longer helps",
}


def check_convergence(facts: Facts) -> CheckResult:
    """How the copy ends: a post-copy switch is a warning, because it gives up the way back;
    so is a prediction that the strategy asked for does not end the move."""
    if not facts.live:
        return _result(CheckName.CONVERGENCE, [], "offline: no memory to copy")
    expected, concerns = expectation(facts)
    switch = auto_choice(facts.intent.strategy, facts.intent.postcopy, facts.prediction).postcopy
    if switch is not PostcopySwitch.OFF:
        when = _POSTCOPY_WHEN[switch] if switch == facts.intent.postcopy else \
            "strategy auto switches after the first pass, as the prediction says nothing else " \
            "ends this move"
        concerns.append(
            f"post-copy ({when}): from the switch on, the "
            "guest runs on the destination, and the move can be neither aborted nor rolled back "
            "to the source; if the link or either host fails before the last page arrives, the "
            "guest stays paused on the destination until the migration is recovered")
    if concerns:
        return _result(CheckName.CONVERGENCE, [], "", [*expected, *concerns])
    return _result(CheckName.CONVERGENCE, [], "; ".join([
        "pre-copy: the guest runs on the source until the switch-over, and a failure before it "
        "leaves it there", *expected]))


# What ends a move that plain pre-copy does not, by the predicted strategy.
_ENDED_BY = {
    Strategy.AUTO: "raising the downtime limit (--strategy auto)",
    Strategy.POSTCOPY: "switching to post-copy",
    Strategy.AUTO_CONVERGE: "throttling the guest's vCPUs (--strategy auto, which then "
    "starts with auto-converge, or --strategy auto-converge), or post-copy (--strategy "
    "postcopy, or auto with --allow-postcopy)",
}
# The strategies that end a move predicted to need each one.
_ENOUGH = {
    Strategy.PRECOPY: set(Strategy),
    Strategy.AUTO: {Strategy.AUTO, Strategy.POSTCOPY, Strategy.AUTO_CONVERGE},
    Strategy.POSTCOPY: {Strategy.POSTCOPY},
    Strategy.AUTO_CONVERGE: {Strategy.AUTO, Strategy.AUTO_CONVERGE, Strategy.POSTCOPY},
}


def expectation(facts: Facts) -> tuple[list[str], list[str]]:
    """The prediction in words, and what about it should worry the operator."""
    if not facts.intent.predict:
        return [], []
    p = facts.prediction
    if p is None:
        return [], [f"no prediction: {facts.prediction_error or 'the guest is not running'}"]
    within = "" if p.working_set_mib is None else f"a {p.working_set_mib} MiB working set of "
    whole = "" if p.whole_mib is None else f"; {p.whole_mib} MiB of it not zero pages"
    measured = (f"the guest dirties {p.dirty_rate_mib_s:g} MiB/s of {within}{p.memory_mib} MiB "
                f"({p.dirty_rate_mode}{whole})")
    if p.link_mib_s is None or p.strategy is None:
        return [f"{measured}; give --bandwidth for a prediction of time and pause"], []
    at = f"at {p.link_mib_s:g} MiB/s"
    if p.strategy is Strategy.PRECOPY:
        return [f"{measured}: {at}, pre-copy converges in about {p.total_s:g} s with a "
                f"{p.downtime_ms} ms pause"], []
    ending = _ENDED_BY[p.strategy]
    times = "" if p.total_s is None else \
        f", in about {p.total_s:g} s with a {p.downtime_ms} ms pause"
    said = f"{measured}: {at}, plain pre-copy does not converge; {ending} ends it{times}"
    asked = facts.intent.strategy
    if p.strategy is Strategy.POSTCOPY and asked is Strategy.AUTO:
        asked = Strategy.POSTCOPY  # auto with --allow-postcopy gets there by switching
    if asked in _ENOUGH[p.strategy]:
        return [said], []
    return [], [f"{said}; with strategy {facts.intent.strategy} it would run until "
                "--timeout (if given) aborts it"]


CHECKS: tuple[Callable[[Facts], CheckResult], ...] = (
    check_hosts, check_vm, check_storage, check_network, check_cpu, check_memory, check_devices,
    check_encryption, check_convergence)


def run_checks(facts: Facts) -> list[CheckResult]:
    return [check(facts) for check in CHECKS]


def report(facts: Facts) -> PreflightReport:
    checks = run_checks(facts)
    return PreflightReport(vm=facts.vm, source=facts.source, destination=facts.destination,
                           storage=resolved_storage(facts), checks=checks,
                           ok=all(c.status != CheckStatus.FAIL for c in checks),
                           prediction=facts.prediction)


def failure_summary(checks: list[CheckResult]) -> str:
    failed = [f"{c.name}: {c.reason}" for c in checks if c.status == CheckStatus.FAIL]
    return "pre-flight failed — " + " | ".join(failed)
