"""What a Ctrl-C at a following ``baton migrate`` decides (cli/interrupt.py)."""

from __future__ import annotations

from baton.cli.interrupt import Choice, Interrupts


async def test_without_a_terminal_ctrl_c_aborts_and_a_second_one_detaches():
    interrupts = Interrupts(prompt=None)
    assert 0 == interrupts.pending
    interrupts.on_signal()
    interrupts.on_signal()  # two presses before the loop looked: one decision
    assert (2, Choice.ABORT, 0) == (interrupts.pending, await interrupts.decide(),
                                    interrupts.pending)
    interrupts.abort_requested = True
    interrupts.on_signal()
    assert Choice.DETACH == await interrupts.decide()


async def test_on_a_terminal_the_operator_is_asked_until_an_abort_is_under_way():
    answers = iter([Choice.CONTINUE, Choice.DETACH])
    interrupts = Interrupts(prompt=lambda: next(answers))
    interrupts.on_signal()
    assert Choice.CONTINUE == await interrupts.decide()
    interrupts.on_signal()
    assert Choice.DETACH == await interrupts.decide()
    interrupts.abort_requested = True
    interrupts.on_signal()
    assert Choice.DETACH == await interrupts.decide()  # not asked again: the abort goes on
