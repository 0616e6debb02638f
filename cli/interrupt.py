"""Ctrl-C while ``baton migrate`` or ``baton move-disk`` follows its job.

Like ``virsh migrate``, an interrupted migrate aborts the job (the guest keeps running where it
was). On a terminal Baton asks first — abort, detach and leave the job running (what
``--detach`` does from the start), or go on watching — because a long copy is easy to lose to a
stray Ctrl-C. Without a terminal (a script) it aborts, as virsh does. A second Ctrl-C after an
abort was asked for detaches at once: the abort goes on in the coordinator, the shell comes back.

The signal handler only counts; the follow loop acts between two events, so nothing runs inside
the handler and the progress bar is paused while the question is on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum

import click


class Choice(StrEnum):
    ABORT = "abort"
    DETACH = "detach"
    CONTINUE = "continue"


class Detached(Exception):
    """The operator chose to leave the job running."""


def ask_on_terminal() -> Choice:
    try:
        answer = click.prompt(
            "\nInterrupted. abort the job (the VM stays where it was), detach and leave it "
            "running, or continue watching?", type=click.Choice([c.value for c in Choice]),
            default=Choice.ABORT.value, err=True)
    except click.Abort:  # Ctrl-C or end of input at the question itself
        return Choice.ABORT
    return Choice(answer)


class Interrupts:
    """Ctrl-C presses not yet acted on, and what they decide."""

    def __init__(self, prompt: Callable[[], Choice] | None) -> None:
        self._prompt = prompt  # None: no one to ask (not a terminal)
        self.pending = 0
        self.abort_requested = False

    def on_signal(self) -> None:
        self.pending += 1

    async def decide(self) -> Choice:
        """What the pending presses ask for (call only when :attr:`pending`)."""
        self.pending = 0
        if self.abort_requested:
            return Choice.DETACH
        if self._prompt is None:
            return Choice.ABORT
        return await asyncio.to_thread(self._prompt)


@contextlib.contextmanager
def catching_ctrl_c() -> Iterator[Interrupts | None]:
    """Route SIGINT to an :class:`Interrupts` while the block runs; None where this loop cannot
    own the signal (not the main thread, as under a test runner's worker thread)."""
    interrupts = Interrupts(ask_on_terminal if sys.stdin.isatty() else None)
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, interrupts.on_signal)
    except (ValueError, RuntimeError, NotImplementedError):
        yield None
        return
    try:
        yield interrupts
    finally:
        loop.remove_signal_handler(signal.SIGINT)
