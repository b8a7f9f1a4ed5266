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


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_returns_distributions_and_weights(name):
    torch.manual_seed(0)
    k, b, c = 3, 5, 4
    agg = build_aggregator(name, ctx(k))
    target, weights, _ = agg(torch.randn(k, b, c), torch.randint(0, c, (b,)), 2.0)
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
