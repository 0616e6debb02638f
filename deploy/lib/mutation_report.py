"""Scores for deploy/mutation, from mutmut's per-file results (``mutants/**/*.py.meta``).

``--report WORK EQUIVALENTS``: a score per module — killed / (mutants - reviewed equivalents) —
and every surviving mutant by name; exit 1 if a module is under GOAL_PCT.
``--narrow PYPROJECT MODULE...``: rewrite [tool.mutmut] only_mutate to those modules (paths as in
the checkout, e.g. coordinator/phases.py).

Equivalent mutants (a change no test can see because behaviour does not change) are listed by
name with the reviewer's reason in tests/mutation/equivalents.toml::

    [equivalent]
    "baton.coordinator.phases.x_moved__mutmut_2" = "why no behaviour changes"
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

GOAL_PCT = 90.0
# mutmut's exit codes (mutmut.stats.status_by_exit_code): 1 and 3 are kills, 0 a survivor.
KILLED, SURVIVED = {1, 3}, {0}
TIMEOUTS = {24, -24, 36, 152, 255}


def load_results(work: Path) -> dict[str, dict[str, int | None]]:
    """module path (baton/x/y.py) -> mutant name -> exit code."""
    results = {}
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(work / "mutants"))[: -len(".meta")]
        results[module] = json.loads(meta.read_text())["exit_code_by_key"]
    return results


def load_equivalents(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return dict(tomllib.loads(path.read_text()).get("equivalent", {}))


def outcome(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUTS:
        return "timeout"  # a mutant that hangs the tests is caught by the time limit
    return "no tests" if code in (5, 33) else "other"


def score_line(module: str, codes: dict[str, int | None], equivalents: dict[str, str]) -> tuple[str, float]:
    counted = {name: code for name, code in codes.items() if name not in equivalents}
    tally = Counter(outcome(code) for code in counted.values())
    caught = tally["killed"] + tally["timeout"]
    pct = 100.0 * caught / len(counted) if counted else 100.0
    extra = ", ".join(f"{n} {what}" for what, n in sorted(tally.items()) if what not in ("killed",))
    reviewed = len(codes) - len(counted)
    line = f"{module:<40} {pct:6.1f} %  {caught}/{len(counted)} caught"
    line += f" ({extra})" if extra else ""
    line += f", {reviewed} equivalent" if reviewed else ""
    return line, pct


def report(work: Path, equivalents_file: Path) -> int:
    results, equivalents = load_results(work), load_equivalents(equivalents_file)
    if not results:
        print("no mutmut results under", work / "mutants", file=sys.stderr)
        return 1
    under = []
    print(f"{'module':<40} {'score':>8}   (goal >= {GOAL_PCT:g} % per module)")
    for module, codes in results.items():
        if not codes:
            continue
        line, pct = score_line(module, codes, equivalents)
        print(line)
        if pct < GOAL_PCT:
            under.append(module)
    survivors = sorted(name for codes in results.values() for name, code in codes.items()
                       if outcome(code) in ("survived", "no tests") and name not in equivalents)
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (show one: cd {work} && mutmut show NAME):")
        print("\n".join(f"  {name}" for name in survivors))
    if under:
        print(f"\nunder the goal: {', '.join(under)}")
    return 1 if under else 0


def narrow(pyproject: Path, modules: list[str]) -> int:
    wanted = ", ".join(f'"baton/{m.removeprefix("./")}"' for m in modules)
    text = re.sub(r"only_mutate = \[.*?\]", f"only_mutate = [{wanted}]", pyproject.read_text(), flags=re.S)
    pyproject.write_text(text)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--report":
        return report(Path(argv[1]), Path(argv[2]))
    if len(argv) >= 3 and argv[0] == "--narrow":
        return narrow(Path(argv[1]), argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
