import math

import pytest
import torch

from mtkd.aggregation import AGGREGATORS, AggregatorContext, build_aggregator
from mtkd.errors import ConfigError

LN3 = math.log(3.0)
# two teachers, one sample, two classes: teacher 0 says [0.75, 0.25], teacher 1 [0.25, 0.75] (at T=1)
LOGITS = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])
LABELS = torch.tensor([0])


def ctx(k, weights=None):
    return AggregatorContext(teachers=[None] * k, num_classes=2, teacher_weights=weights)


def full_ctx(k, c, features=6):
    """Real teachers, a validation split and a feature width: what the pipeline gives aggregators."""
    from torch import nn

    from mtkd.data import IndexedTensorDataset
    from mtkd.teachers import FrozenTeacher

    teachers = [FrozenTeacher(nn.Linear(3, c), f"t{i}", c) for i in range(k)]
    val = IndexedTensorDataset(torch.randn(20, 3), torch.randint(0, c, (20,)))
    return AggregatorContext(teachers, c, None, val, features)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_returns_distributions_and_weights(name):
    torch.manual_seed(0)
    k, b, c = 3, 5, 4
    agg = build_aggregator(name, full_ctx(k, c))
    student = torch.randn(b, c, requires_grad=True)
    target, weights, _ = agg(torch.randn(k, b, c), torch.randint(0, c, (b,)), 2.0, student_logits=student,
                             features=torch.randn(b, 6))
    assert target.shape == (b, c) and weights.shape == (b, k)
    assert torch.allclose(target.sum(1), torch.ones(b), atol=1e-6)
    assert torch.allclose(weights.sum(1), torch.ones(b), atol=1e-6)
    assert (target >= 0).all() and (weights >= 0).all()
    assert AGGREGATORS[name].description


def test_mean_averages_probabilities():
    target, weights, _ = build_aggregator("mean", ctx(2))(LOGITS, LABELS, 1.0)
    assert torch.allclose(target, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(weights, torch.tensor([[0.5, 0.5]]))


def test_mean_softens_at_temperature():
    target, _, _ = build_aggregator("mean", ctx(1))(LOGITS[:1], LABELS, 2.0)
    # softmax([ln3 / 2, 0]) = [sqrt3, 1] / (sqrt3 + 1)
    s3 = math.sqrt(3.0)
    assert torch.allclose(target, torch.tensor([[s3 / (s3 + 1), 1 / (s3 + 1)]]))


def test_weighted_uses_normalized_fixed_weights():
    target, weights, _ = build_aggregator("weighted", ctx(2, [3.0, 1.0]))(LOGITS, LABELS, 1.0)
    # 0.75 * [0.75, 0.25] + 0.25 * [0.25, 0.75] = [0.625, 0.375]
    assert torch.allclose(target, torch.tensor([[0.625, 0.375]]))
    assert torch.allclose(weights, torch.tensor([[0.75, 0.25]]))


@pytest.mark.parametrize("bad", [[1.0], [-1.0, 2.0], [0.0, 0.0]])
def test_weighted_rejects_bad_weights(bad):
    with pytest.raises(ConfigError):
        build_aggregator("weighted", ctx(2, bad))


# a third teacher that is undecided: [0.5, 0.5]
LOGITS3 = torch.cat([LOGITS, torch.zeros(1, 1, 2)])


def test_confidence_weights_match_camkd_eq2():
    # CE of the teachers on label 0: -ln 0.75, -ln 0.25, -ln 0.5 -> exp(CE) = 4/3, 4, 2
    # softmax over teachers = [4/22, 12/22, 6/22]; w = (1 - softmax) / (K - 1)
    _, weights, _ = build_aggregator("confidence", ctx(3))(LOGITS3, LABELS, 1.0)
    assert torch.allclose(weights, torch.tensor([[9 / 22, 5 / 22, 8 / 22]]), atol=1e-6)
    target, weights, _ = build_aggregator("confidence", ctx(2))(LOGITS, LABELS, 1.0)
    assert torch.allclose(weights, torch.tensor([[0.75, 0.25]]), atol=1e-6)
    assert torch.allclose(target, torch.tensor([[0.625, 0.375]]), atol=1e-6)


def test_confidence_uses_the_ensemble_vote_for_unlabeled_samples():
    # teachers 0 and 2 vote for class 0 (mean probability [0.5, 0.5] -> argmax 0), like label 0
    _, labeled, _ = build_aggregator("confidence", ctx(3))(LOGITS3, LABELS, 1.0)
    _, unlabeled, _ = build_aggregator("confidence", ctx(3))(LOGITS3, torch.tensor([-1]), 1.0)
    assert torch.allclose(labeled, unlabeled)


def test_best_picks_the_right_teacher_with_highest_confidence():
    # label 0: teacher 0 right (0.75), teacher 2 right by tie-break (0.5), teacher 1 wrong -> teacher 0
    target, weights, _ = build_aggregator("best", ctx(3))(LOGITS3, LABELS, 1.0)
    assert weights.tolist() == [[1.0, 0.0, 0.0]]
    assert torch.allclose(target, torch.tensor([[0.75, 0.25]]))
    # label 1 where no teacher is right: the least wrong (highest probability on label 1)
    wrong = torch.tensor([[[2.0, 0.0]], [[1.0, 0.0]]])
    _, weights, _ = build_aggregator("best", ctx(2))(wrong, torch.tensor([1]), 1.0)
    assert weights.tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("name", ["confidence", "best"])
def test_a_teacher_that_is_always_wrong_gets_less_weight(name):
    torch.manual_seed(1)
    b, c = 64, 5
    labels = torch.randint(0, c, (b,))
    right = torch.nn.functional.one_hot(labels, c).float() * 3 + 0.3 * torch.randn(b, c)
    wrong = torch.nn.functional.one_hot((labels + 1) % c, c).float() * 3 + 0.3 * torch.randn(b, c)
    _, weights, _ = build_aggregator(name, ctx(2))(torch.stack([right, wrong]), labels, 4.0)
    assert (weights[:, 0] > weights[:, 1]).all()


def test_disagreement_measures_by_hand():
    from mtkd.aggregation.disagreement import pairwise_kl, vote_entropy

    # KL([.75,.25] || [.25,.75]) = 0.5 ln 3 in both directions
    assert pairwise_kl(LOGITS).item() == pytest.approx(0.5 * math.log(3), rel=1e-6)
    assert vote_entropy(LOGITS).item() == pytest.approx(math.log(2), rel=1e-6)
    same = LOGITS[:1].expand(3, -1, -1)
    assert pairwise_kl(same).item() == pytest.approx(0.0, abs=1e-7)
    assert vote_entropy(same).item() == pytest.approx(0.0, abs=1e-7)


def test_accuracy_weights_are_softmax_of_validation_accuracy():
    from torch import nn

    from mtkd.data import IndexedTensorDataset
    from mtkd.teachers import FrozenTeacher

    class Says(nn.Module):  # predicts class x[:, 0] where `right`, else the next class
        def __init__(self, right):
            super().__init__()
            self.right = right

        def forward(self, x):
            y = x[:, 0].long()
            y = torch.where(self.right, y, (y + 1) % 2)
            return torch.nn.functional.one_hot(y, 2).float() * 5

    x = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    val = IndexedTensorDataset(x, x[:, 0].long())
    always = FrozenTeacher(Says(torch.tensor([True] * 4)), "always", 2)
    half = FrozenTeacher(Says(torch.tensor([True, True, False, False])), "half", 2)
    never = FrozenTeacher(Says(torch.tensor([False] * 4)), "never", 2)
    agg = build_aggregator("accuracy", AggregatorContext([always, half, never], 2, None, val),
                           {"weight_temperature": 0.5})
    assert agg.accuracy.tolist() == [1.0, 0.5, 0.0]
    e = torch.exp(torch.tensor([2.0, 1.0, 0.0]))  # accuracy / 0.5
    _, weights, _ = agg(torch.zeros(3, 2, 2), torch.tensor([0, 1]), 1.0)
    assert torch.allclose(weights, (e / e.sum()).expand(2, -1))
    assert weights[0, 0] > weights[0, 1] > weights[0, 2]


def test_accuracy_without_validation_split_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs a labeled validation split"):
        build_aggregator("accuracy", ctx(2))
