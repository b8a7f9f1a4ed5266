import torch
from torch import nn

from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.data import IndexedTensorDataset
from mtkd.recipes import SemiSupervisedRecipe
from mtkd.recipes.semi_supervised import SemiSupervisedOptions
from mtkd.teachers import FrozenTeacher


class Fixed(nn.Module):
    """Predicts class 0 for x[:, 0] > 0, else class `other`."""

    def __init__(self, other):
        super().__init__()
        self.other = other

    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, 0] = 4.0 * (x[:, 0] > 0)
        out[torch.arange(len(x)), self.other] += 4.0 * (x[:, 0] <= 0)
        return out


def _recipe(selection, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(400, 2)
    pool = IndexedTensorDataset(x, torch.full((400,), -1), torch.arange(100, 500))
    teachers = [FrozenTeacher(Fixed(1), "a", 3), FrozenTeacher(Fixed(2), "b", 3)]  # disagree where x0 <= 0
    agg = build_aggregator("mean", AggregatorContext(teachers))
    opts = SemiSupervisedOptions(selection=selection, unlabeled_batch_size=64, floor=0.05)
    return SemiSupervisedRecipe(nn.Linear(2, 3), teachers, agg, options=opts, unlabeled=pool), x


def test_disagreement_sampling_prefers_contested_samples():
    recipe, x = _recipe("sample")
    contested = (x[:, 0] <= 0).float().mean().item()  # about half the pool
    drawn = []
    for _ in range(20):
        xu, _, _ = recipe._unlabeled_batch()
        drawn.append((xu[:, 0] <= 0).float().mean().item())
        recipe.steps_done += 1
    # probability is d + 0.05 * mean(d): contested samples are drawn ~20x as often as agreed ones
    assert sum(drawn) / len(drawn) > 0.9 > contested + 0.3


def test_uniform_selection_ignores_disagreement_and_steps_are_deterministic():
    recipe, x = _recipe("uniform")
    first = recipe._unlabeled_batch()[1]
    again = recipe._unlabeled_batch()[1]
    assert torch.equal(first, again)  # same step, same batch: what makes resume exact
    assert "steps_done" in recipe.state_dict() and "scores" not in recipe.state_dict()


def test_step_returns_named_losses_and_trains():
    recipe, _ = _recipe("weight")
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    out = recipe.step(x, y, torch.arange(16))
    assert {"loss", "ce", "kd", "disagreement", "weight/a", "weight/b"} <= set(out)
    out["loss"].backward()
    assert recipe.student.weight.grad is not None and int(recipe.steps_done) == 1
