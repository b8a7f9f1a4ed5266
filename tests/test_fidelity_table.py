"""docs/fidelity.md stays complete: a row for every aggregator, loss and recipe that `mtkd list`
shows, and every row points to tests that exist (the tests that compare the method with values
computed by hand from its paper's equations)."""
from __future__ import annotations

import re
from pathlib import Path

from mtkd.aggregation import AGGREGATORS
from mtkd.losses import LOSSES
from mtkd.recipes import RECIPES

ROOT = Path(__file__).parent.parent
TESTS = Path(__file__).parent


def _method_rows() -> list[list[str]]:
    """The cells of each row of the '## Methods' table."""
    text = (ROOT / "docs" / "fidelity.md").read_text()
    section = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _defined_tests() -> dict[str, set[str]]:
    """test file name -> the test functions it defines."""
    return {path.name: set(re.findall(r"^def (test_\w+)", path.read_text(), re.M)) for path in TESTS.glob("test_*.py")}


def test_every_listed_component_has_a_row():
    named = {name for row in _method_rows() for name in re.findall(r"`([\w-]+)", row[0])}
    components = {f"aggregator {n}" for n in AGGREGATORS if n not in named} | \
        {f"loss {n}" for n in LOSSES if n not in named} | {f"recipe {n}" for n in RECIPES if n not in named}
    assert not components, f"no row in docs/fidelity.md for: {sorted(components)}"


def test_every_row_points_to_tests_that_exist():
    defined = _defined_tests()
    everywhere = set().union(*defined.values())
    for cells in _method_rows():
        pointers = re.findall(r"`(?:(test_\w+\.py)::)?(test_\w+)`", " ".join(cells[1:]))
        assert pointers, f"row {cells[0]!r} points to no test"
        for file, name in pointers:
            if file:
                assert name in defined.get(file, set()), f"row {cells[0]!r}: {file}::{name} does not exist"
            else:
                assert name in everywhere, f"row {cells[0]!r}: {name} does not exist in tests/"
