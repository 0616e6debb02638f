"""tests/mutation/equivalents.toml stays readable by deploy/mutation: valid TOML (no key twice),
each entry a mutant of a module the mutation run covers, each with a reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_reviewed_equivalent_names_a_mutated_module_and_says_why():
    equivalents = tomllib.loads((ROOT / "tests/mutation/equivalents.toml").read_text())["equivalent"]
    mutated = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    modules = {path.removesuffix(".py").replace("/", ".") for path in mutated}
    if (ROOT / "baton").is_dir():  # deploy/mutation's scratch copy: only_mutate names just the
        # modules under measurement there, so an entry need only name a module of the copy
        modules |= {".".join(path.relative_to(ROOT).with_suffix("").parts)
                    for path in (ROOT / "baton").rglob("*.py")}
    assert [] == [name for name in equivalents if not any(name.startswith(m + ".") for m in modules)]
    assert [] == [name for name, reason in equivalents.items() if len(reason) < 20]
