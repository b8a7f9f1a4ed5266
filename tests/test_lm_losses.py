"""Token-level losses (mtkd.losses.tokens) against hand-computed values on small tensors."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.data.text import loss_mask
from mtkd.losses.tokens import (aggregated_token_loss, forward_kl, jsd, masked_positions, reverse_kl,
                                token_divergence, token_loss)

LN3 = math.log(3.0)
# student logits [0, 0] -> q = (1/2, 1/2); teacher logits [ln 3, 0] -> p = (3/4, 1/4)
P, Q = (0.75, 0.25), (0.5, 0.5)
FORWARD = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p || q) = 0.130812
REVERSE = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(q || p) = 0.143841
M = (0.5 * 0.75 + 0.5 * 0.5, 0.5 * 0.25 + 0.5 * 0.5)  # beta = 0.5: m = (0.625, 0.375)
JSD = 0.5 * (0.75 * math.log(0.75 / M[0]) + 0.25 * math.log(0.25 / M[1])) \
    + 0.5 * (0.5 * math.log(0.5 / M[0]) + 0.5 * math.log(0.5 / M[1]))  # 0.033822


def _one(student, teacher):  # [1, 2, V] logits, mask [1, 2] with the one target at t = 1
    return torch.tensor([[student, [0.0, 0.0]]]), torch.tensor([[teacher, [0.0, 0.0]]]), torch.tensor([[False, True]])


def test_hand_values_of_forward_reverse_and_jsd():
    s, t, mask = _one([0.0, 0.0], [LN3, 0.0])
    assert forward_kl(s, t, mask).item() == pytest.approx(FORWARD, abs=1e-6)
    assert reverse_kl(s, t, mask).item() == pytest.approx(REVERSE, abs=1e-6)
    assert jsd(s, t, mask, beta=0.5).item() == pytest.approx(JSD, abs=1e-6)
    # beta = 0.9: m = 0.9 p + 0.1 q
    m = (0.9 * 0.75 + 0.1 * 0.5, 0.9 * 0.25 + 0.1 * 0.5)
    want = 0.9 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])) \
        + 0.1 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    assert jsd(s, t, mask, beta=0.9).item() == pytest.approx(want, abs=1e-6)


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    s, t, mask = _one([0.0, 0.0], [2 * LN3, 0.0])  # at T = 2 the teacher is again (3/4, 1/4)
    assert forward_kl(s, t, mask, temperature=2.0).item() == pytest.approx(4 * FORWARD, abs=1e-5)
    assert reverse_kl(s, t, mask, temperature=2.0).item() == pytest.approx(4 * REVERSE, abs=1e-5)


def test_masked_out_positions_do_not_count():
    # three positions: logits at t predict token t + 1; the mask keeps only token 1 (predicted at t = 0)
    s = torch.tensor([[[0.0, 0.0], [5.0, -5.0], [1.0, 2.0]]])
    t = torch.tensor([[[LN3, 0.0], [-5.0, 5.0], [3.0, 0.0]]])
    mask = torch.tensor([[False, True, False]])
    assert forward_kl(s, t, mask).item() == pytest.approx(FORWARD, abs=1e-6)
    assert masked_positions(s, mask).shape == (1, 2)


def test_loss_mask_by_hand():
    eos, pad = 2, 1
    ids = torch.tensor([[5, 6, eos, 7, 8, eos, pad, pad]])
    assert loss_mask(ids, eos, pad).tolist() == [[False, True, True, False, True, True, False, False]]
    # pad == eos (GPT-2 style): the padding after the last EOS is out because it follows an EOS
    ids = torch.tensor([[5, 6, eos, 7, eos, eos]])
    assert loss_mask(ids, eos, eos).tolist() == [[False, True, True, False, True, False]]


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_chunks_give_the_same_value_and_gradient(kind):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 7, 11, generator=g, requires_grad=True)
    t = torch.randn(2, 7, 11, generator=g)
    mask = torch.rand(2, 7, generator=g) > 0.3
    a = token_loss(s, t, mask, kind, temperature=1.5, beta=0.3, chunk=3)
    (ga,) = torch.autograd.grad(a, s)
    b = token_loss(s, t, mask, kind, temperature=1.5, beta=0.3, chunk=1000)
    (gb,) = torch.autograd.grad(b, s)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ga, gb, atol=1e-7)


def test_mean_aggregate_is_the_mixture_of_probabilities():
    # two teachers (3/4, 1/4) and (1/4, 3/4): their mean is (1/2, 1/2), the student's own q -> 0
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])  # [K=2, N=1, V=2]
    mean = build_aggregator("mean", AggregatorContext(teachers=[object(), object()], num_classes=2))
    loss, weights = aggregated_token_loss(mean, s, t, torch.tensor([0]), torch.tensor([0]), "forward_kl")
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and weights.tolist() == [[0.5, 0.5]]
    # reverse KL is taken to the mixture (1/2, 1/2) itself: sum q (log q - log 1/2)
    s = torch.tensor([[1.0, -1.0]])
    loss, _ = aggregated_token_loss(mean, s, t, torch.tensor([0]), None, "reverse_kl")
    q = torch.softmax(s, -1)[0]
    assert loss.item() == pytest.approx(float((q * (q.log() - math.log(0.5))).sum()), abs=1e-6)


def test_jsd_refuses_beta_at_the_ends():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        token_divergence(torch.zeros(1, 2), torch.log(torch.tensor([[0.5, 0.5]])), "jsd", beta=1.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=3, max_size=3), st.lists(st.floats(-8, 8), min_size=3, max_size=3),
       st.sampled_from(["forward_kl", "reverse_kl", "jsd"]), st.floats(0.5, 4.0))
def test_divergences_are_nonnegative_and_zero_on_equal_distributions(s, t, kind, temperature):
    s, t = torch.tensor([s]), torch.tensor([t])
    target = torch.log_softmax(t / temperature, -1)
    assert token_divergence(s, target, kind, temperature).item() >= -1e-5
    assert abs(token_divergence(t, target, kind, temperature).item()) < 1e-4
