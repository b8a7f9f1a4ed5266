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


def test_uekd_labeled_weights_and_loss_by_hand():
    import math

    import pytest

    from mtkd.recipes.semi_supervised import uekd_labeled_kd, uekd_labeled_weights

    ln3 = math.log(3.0)
    # sample 0 (label 0): teacher a says [.75, .25], teacher b [.25, .75]; sample 1 is unlabeled
    z = torch.tensor([[[ln3, 0.0], [0.0, 0.0]], [[0.0, ln3], [0.0, 0.0]]])  # [K=2, B=2, C=2]
    w, u = uekd_labeled_weights(z[:, :1], torch.tensor([0]))
    assert torch.allclose(w, torch.tensor([[0.75, 0.25]]))  # proportional to p_k(y)
    assert u.item() == pytest.approx(0.75 * 0.75 + 0.25 * 0.25)  # the weighted ensemble's p(y) = 0.625
    student = torch.tensor([[1.0, -1.0], [5.0, 5.0]])
    t = 2.0
    pa, pb = [3 ** 0.5 / (1 + 3 ** 0.5), 1 / (1 + 3 ** 0.5)], [1 / (1 + 3 ** 0.5), 3 ** 0.5 / (1 + 3 ** 0.5)]
    target = [0.75 * a + 0.25 * b for a, b in zip(pa, pb)]  # softened at T = 2, mixed with w
    q = [math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5)), math.exp(-0.5) / (math.exp(0.5) + math.exp(-0.5))]
    kl = sum(p * math.log(p / qq) for p, qq in zip(target, q))
    got = uekd_labeled_kd(student, z, torch.tensor([0, -1]), t)
    assert got.item() == pytest.approx(0.625 * 4 * kl, rel=1e-5)  # mean over the one labeled sample
    # a dropped teacher counts for nothing; every teacher certain the label is wrong: equal weights
    w, _ = uekd_labeled_weights(z[:, :1], torch.tensor([0]), alive=torch.tensor([False, True]))
    assert torch.allclose(w, torch.tensor([[0.0, 1.0]]))
    w, u = uekd_labeled_weights(torch.tensor([[[-200.0, 0.0]], [[-200.0, 0.0]]]), torch.tensor([0]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.5]])) and u.item() == pytest.approx(0.0, abs=1e-12)


def test_default_step_distils_on_labeled_and_unlabeled_batches():
    recipe, _ = _recipe("weight")
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    with_labeled = recipe.step(x, y, torch.arange(16))["kd"]
    recipe.steps_done -= 1  # the same unlabeled batch again
    recipe.options = SemiSupervisedOptions(selection="weight", unlabeled_batch_size=64, floor=0.05, labeled="none")
    without = recipe.step(x, y, torch.arange(16))["kd"]
    assert with_labeled.item() != without.item()


def test_an_aggregator_that_trains_through_its_own_loss_term_needs_labeled_aggregator():
    """Meta's form joint declares adds_losses: its gate learns from the labeled samples the aggregator
    is shown, which this recipe does only with labeled: aggregator (read from the declared record)."""
    import pytest

    from mtkd.errors import ConfigError

    pool = IndexedTensorDataset(torch.randn(40, 2), torch.full((40,), -1), torch.arange(40))
    teachers = [FrozenTeacher(Fixed(1), "a", 3), FrozenTeacher(Fixed(2), "b", 3)]
    joint = build_aggregator("meta", AggregatorContext(teachers, 3, feature_dim=2), {"form": "joint"})
    with pytest.raises(ConfigError, match="meta with form: joint"):
        SemiSupervisedRecipe(nn.Linear(2, 3), teachers, joint, unlabeled=pool)
    SemiSupervisedRecipe(nn.Linear(2, 3), teachers, joint, unlabeled=pool,
                         options=SemiSupervisedOptions(labeled="aggregator"))
