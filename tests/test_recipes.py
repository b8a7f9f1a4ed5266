"""Every registered recipe with every registered aggregator, end to end through the CLI on tiny models."""
import json

import pytest
import yaml

from mtkd.aggregation import AGGREGATORS
from mtkd.cli import main
from mtkd.recipes import RECIPES


# every recipe that uses teachers runs with every aggregator; the others once
PAIRS = [(r, a) for r in sorted(RECIPES) for a in sorted(AGGREGATORS) if RECIPES[r].traits.uses_aggregator or a == "mean"]


@pytest.mark.parametrize("recipe, aggregator", PAIRS)
def test_recipe_and_aggregator_run_through_the_cli(tmp_path, capsys, tiny_raw_config, recipe, aggregator):
    raw = dict(tiny_raw_config)
    raw["distill"] = dict(raw["distill"], recipe=recipe, aggregator=aggregator, steps=12, baseline=False)
    raw["teachers"] = [dict(t, weight=w) for t, w in zip(raw["teachers"], [3.0, 1.0])]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["recipe"] == recipe and summary["timing"]["steps"] == 12
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    distill = [r for r in records if r["stage"] in ("distill", "scratch") and "loss" in r]
    assert distill and all(r["loss"] == r["loss"] for r in distill)  # logged and finite
    if RECIPES[recipe].traits.needs_teachers:
        last = distill[-1]
        # TAKD's student learns from its (default: one) assistant, the other recipes from the teachers
        names = ["assistant1"] if recipe == "assistant" else ["cnn", "mlp"]
        assert {"kd", "ce"} | {f"weight/{n}" for n in names} <= set(last)
        assert sum(last[f"weight/{n}"] for n in names) == pytest.approx(1.0, abs=1e-5)
        fixed = {"mean": 0.5, "weighted": 0.75}
        if aggregator in fixed and recipe != "assistant":
            assert last["weight/cnn"] == pytest.approx(fixed[aggregator])


def test_scratch_recipe_is_cross_entropy_on_the_labeled_samples_by_hand():
    import math

    import torch

    from mtkd.recipes.scratch import ScratchRecipe

    student = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # logits = x
    x = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0], [5.0, -5.0]])
    y = torch.tensor([0, 1, -1])  # the third sample is unlabeled: no signal without a teacher
    out = ScratchRecipe(student).step(x, y, None)
    expected = (-math.log(0.75) - math.log(0.5)) / 2  # softmax([ln 3, 0]) = [0.75, 0.25]; [0.5, 0.5]
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["ce"].item() == pytest.approx(expected, rel=1e-6)
