"""Python handle on one lab (``deploy/lab``): hosts, virsh, exec, guests, consoles.

Every call shells out to ``deploy/lab`` with the lab's prefix, so tests see exactly
what an operator sees. Waits poll a console or a domain state with a deadline;
nothing here sleeps for correctness.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LAB_CMD = REPO / "deploy" / "lab"
ALIVE_RE = re.compile(r"dirtier: alive seq=(\d+)")
CORRUPTION_RE = re.compile(r"BUG|Oops|panic")
LAB_HOSTS = 3  # the session lab's size; h3 is the host without br-vm

GuestFactory = Callable[..., str]  # guest(host="h1", **Lab.guest options) -> name

# Disk heartbeat record (see deploy/README.md and deploy/lab.d/guest/dirtier.c).
HB_MAGIC = b"BATONHB1"
HB_SIZE = 512
HB_SLOTS = 2048


class LabError(RuntimeError):
    """A ``deploy/lab`` command failed; the message carries its stderr."""


@dataclass(frozen=True)
class Heartbeats:
    """What the guest's disk heartbeat ring holds."""

    valid_seqs: tuple[int, ...]
    corrupt_records: int
    boot_ids: frozenset[int]

    @property
    def max_seq(self) -> int:
        return max(self.valid_seqs, default=0)


def _fnv1a32(data: bytes) -> int:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def parse_heartbeats(raw: bytes) -> Heartbeats:
    """Decode the first HB_SLOTS sectors of a raw disk image into heartbeat records."""
    seqs: list[int] = []
    boots: set[int] = set()
    corrupt = 0
    for slot in range(min(HB_SLOTS, len(raw) // HB_SIZE)):
        rec = raw[slot * HB_SIZE : (slot + 1) * HB_SIZE]
        if rec[:8] != HB_MAGIC:
            continue
        seq, boot_id, _uptime_ms = struct.unpack_from("<QQQ", rec, 8)
        (checksum,) = struct.unpack_from("<I", rec, 508)
        filler_ok = all(rec[i] == (seq + i) & 0xFF for i in range(32, 508))
        if checksum == _fnv1a32(rec[:508]) and filler_ok and seq % HB_SLOTS == slot:
            seqs.append(seq)
            boots.add(boot_id)
        else:
            corrupt += 1
    return Heartbeats(tuple(sorted(seqs)), corrupt, frozenset(boots))


@dataclass(frozen=True)
class Lab:
    """One lab, named by its prefix (``BATON_LAB_PREFIX``)."""

    prefix: str

    # --- raw command access -------------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``deploy/lab ARGS`` for this prefix; raise LabError on failure if ``check``."""
        env = {**os.environ, "BATON_LAB_PREFIX": self.prefix}
        proc = subprocess.run(
            [str(LAB_CMD), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise LabError(f"deploy/lab {' '.join(args)} -> {proc.returncode}\n{proc.stderr}{proc.stdout}")
        return proc

    def up(self, hosts: int = 3, *, baton: bool = False) -> None:
        self.run("up", str(hosts), *([] if baton else ["--no-baton"]), timeout=900)

    def down(self) -> None:
        self.run("down", timeout=300)

    def healthy(self, hosts: int = 3) -> bool:
        return self.run("check", str(hosts), check=False).returncode == 0

    def env(self) -> dict[str, str]:
        """The variables ``deploy/lab env`` exports (BATON_NATS, BATON_LAB_SUBNET, ...)."""
        out = self.run("env").stdout
        return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if "=" in line)

    # --- hosts ----------------------------------------------------------------
    def uri(self, host: str) -> str:
        """``qemu+tls://IP/system?pkipath=...`` of a host, reachable from the root namespace."""
        return self.run("uri", host).stdout.strip()

    def ip(self, host: str) -> str:
        return self.uri(host).split("//", 1)[1].split("/", 1)[0]

    @property
    def bridge_ip(self) -> str:
        return self.env()["BATON_NATS"].split("//", 1)[1].split(":", 1)[0]

    def virsh(self, host: str, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Any virsh command against ``host``'s own daemon; returns stdout."""
        return self.run("virsh", host, *args, check=check, timeout=timeout).stdout

    def exec(
        self, host: str, *cmd: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run CMD inside ``host``'s namespaces."""
        return self.run("exec", host, *cmd, check=check, timeout=timeout)

    def exec_argv(self, host: str, *cmd: str) -> list[str]:
        """argv that runs CMD inside ``host`` (for Popen of long-lived processes such as agents).

        Run it with env BATON_LAB_PREFIX set to this lab's prefix (see ``popen_env``).
        """
        return [str(LAB_CMD), "exec", host, *cmd]

    def popen_env(self) -> dict[str, str]:
        return {**os.environ, "BATON_LAB_PREFIX": self.prefix}

    def link_names(self, host: str) -> list[str]:
        out = self.exec(host, "ip", "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def pools(self, host: str) -> dict[str, str]:
        """Pool name -> state ("active"/"inactive") on ``host``."""
        out = self.virsh(host, "pool-list", "--all")
        rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
        return {row[0]: row[1] for row in rows}

    # --- domains ----------------------------------------------------------------
    def domains(self, host: str, *, all_: bool = False) -> list[str]:
        out = self.virsh(host, "list", "--name", *(["--all"] if all_ else []))
        return [name.strip() for name in out.splitlines() if name.strip()]

    def domstate(self, host: str, name: str) -> str | None:
        """``running``, ``shut off``, ... or None when the domain is unknown on ``host``."""
        proc = self.run("virsh", host, "domstate", name, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def wait_domstate(self, host: str, name: str, state: str | None, timeout: float = 120) -> None:
        self._poll(lambda: self.domstate(host, name) == state, timeout, f"{name} on {host} -> {state}")

    def jobinfo(self, host: str, name: str) -> dict[str, str]:
        """``virsh domjobinfo``: libvirt's own view of the running job (empty when there is none)."""
        proc = self.run("virsh", host, "domjobinfo", name, check=False)
        rows = (line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in rows} if proc.returncode == 0 else {}

    def qemu_migration(self, host: str, name: str) -> dict[str, Any]:
        """QEMU's own migration parameters and status (QMP ``query-migrate-parameters`` and
        ``query-migrate``) for a running domain: the settings that really apply to the job."""
        params = self._qmp(host, name, "query-migrate-parameters")
        status = self._qmp(host, name, "query-migrate")
        return {**params, "status": status.get("status"),
                "cpu-throttle-percentage": status.get("cpu-throttle-percentage", 0)}

    def _qmp(self, host: str, name: str, command: str) -> dict[str, Any]:
        out = self.virsh(host, "qemu-monitor-command", name, json.dumps({"execute": command}))
        return dict(json.loads(out)["return"])

    # --- guests -------------------------------------------------------------------
    def guest(
        self,
        name: str,
        host: str,
        *,
        memory_mib: int = 128,
        dirty_mb: int = 16,
        dirty_rate_mib_s: float = 8,
        storage: str = "shared",
        pool: str | None = None,
        disk_mib: int = 64,  # small: a copy at a low test cap still takes seconds, not minutes
        nic: bool = False,
        transient: bool = False,
        start: bool = True,
        wait: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        """``deploy/lab guest``: create disk, define, start, wait for GUEST-READY."""
        args = ["guest", name, "--host", host, "--memory", str(memory_mib), "--dirty-mb", str(dirty_mb)]
        args += ["--dirty-rate", str(dirty_rate_mib_s), "--storage", storage, "--disk-mib", str(disk_mib)]
        args += [flag for flag, on in (("--nic", nic), ("--transient", transient)) if on]
        args += ["--pool", pool] if pool else []
        args += [flag for flag, on in (("--no-start", not start), ("--no-wait", not wait)) if on]
        self.run(*args, *extra, timeout=600)

    def libvirtd(self, host: str, action: str) -> None:
        """``start``, ``stop`` or ``kill`` (a crash) the host's libvirtd."""
        self.run("libvirtd", host, action, timeout=120)

    def guest_rm(self, name: str) -> None:
        self.run("guest-rm", name, timeout=300)

    def console(self, name: str) -> str:
        """Console log of ``name`` on the host it runs on now."""
        return self.run("console", name).stdout

    def alive_seq(self, name: str) -> int:
        """Highest ``dirtier: alive seq=N`` in the guest's current console (0 if none)."""
        return max((int(m) for m in ALIVE_RE.findall(self.console(name))), default=0)

    def wait_console(self, name: str, pattern: str, timeout: float = 120) -> re.Match[str]:
        """Wait until the guest's console matches ``pattern``; return the match."""
        found: list[re.Match[str]] = []

        def matched() -> bool:
            proc = self.run("console", name, check=False)
            m = re.search(pattern, proc.stdout) if proc.returncode == 0 else None
            if m:
                found.append(m)
            return m is not None

        self._poll(matched, timeout, f"console of {name} to match {pattern!r}")
        return found[0]

    def wait_alive_past(self, name: str, seq: int, timeout: float = 120) -> int:
        """Wait until the guest's console shows an alive seq greater than ``seq``; return it."""
        self._poll(lambda: self.alive_seq(name) > seq, timeout, f"{name} alive seq > {seq}")
        return self.alive_seq(name)

    def disk_path(self, name: str, storage: str = "shared", host: str = "h1") -> Path:
        """Root-namespace path of a guest disk made by ``guest``."""
        if storage == "shared":
            return Path(self.env()["BATON_LAB_SHARED"]) / f"{name}.qcow2"
        return Path(f"/var/lib/baton-lab/{self.prefix}/hosts/{host}/var-lib-libvirt/images/{name}.qcow2")

    def host_path(self, host: str, path: str) -> Path:
        """Root-namespace view of a path under ``/var/lib/libvirt`` inside ``host``."""
        inside = Path(path).relative_to("/var/lib/libvirt")
        return Path(f"/var/lib/baton-lab/{self.prefix}/hosts/{host}/var-lib-libvirt") / inside

    def heartbeats(self, disk: Path) -> Heartbeats:
        """Read the heartbeat ring from a qcow2 disk (works on a running guest: ``-U``)."""
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "hb.raw"
            subprocess.run(
                [
                    "qemu-img",
                    "dd",
                    "-U",
                    "-f",
                    "qcow2",
                    "-O",
                    "raw",
                    f"if={disk}",
                    f"of={raw}",
                    "bs=512",
                    f"count={HB_SLOTS}",
                ],
                check=True,
                capture_output=True,
            )
            return parse_heartbeats(raw.read_bytes())

    @staticmethod
    def _poll(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)
