"""A new agent's ledger (agent/ledger.py) in a directory of its own, as on a fresh host."""

from __future__ import annotations

import tempfile
from pathlib import Path

from baton.agent.ledger import Ledger


def fresh_ledger() -> Ledger:
    ledger = Ledger(Path(tempfile.mkdtemp(prefix="baton-ledger-")))
    ledger.open()
    return ledger
