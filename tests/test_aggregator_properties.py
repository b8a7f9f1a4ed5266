"""Property tests over every aggregator (hypothesis): for random and degenerate teacher
outputs (one-hot, identical, uniform, extreme logits) and any K >= 1, the per-sample weights
are >= 0 and sum to 1, and the target is a probability distribution."""
import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mtkd.aggregation import AGGREGATORS, AggregatorContext, build_aggregator
from mtkd.data import IndexedTensorDataset
from mtkd.teachers import FrozenTeacher

C, F = 4, 3  # classes, student feature width


@functools.lru_cache(maxsize=None)
def aggregator(name: str, k: int):
    """Built once per (name, K): real teachers and a validation split, as the pipeline gives."""
    torch.manual_seed(k)
    teachers = [FrozenTeacher(nn.Linear(3, C), f"t{i}", C) for i in range(k)]
    val = IndexedTensorDataset(torch.randn(10, 3), torch.randint(0, C, (10,)))
    return build_aggregator(name, AggregatorContext(teachers, C, None, val, F))


KINDS = ["random", "one_hot", "identical", "uniform", "extreme", "tied_certain"]


@st.composite
def teacher_batches(draw):
    k = draw(st.integers(1, 4))
    b = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    if kind == "random":
        z = torch.randn(k, b, C, generator=g) * scale
    elif kind == "one_hot":  # every teacher fully certain (entropy 0 in float32), classes may differ
        z = nn.functional.one_hot(torch.randint(0, C, (k, b), generator=g), C).float() * 200.0
    elif kind == "identical":
        z = (torch.randn(1, b, C, generator=g) * scale).expand(k, -1, -1).clone()
    elif kind == "uniform":
        z = torch.zeros(k, b, C)
    elif kind == "extreme":
        z = torch.randn(k, b, C, generator=g) * 1e4
    else:  # every teacher certain of the same class
        z = nn.functional.one_hot(torch.randint(0, C, (1, b), generator=g), C).float().expand(k, -1, -1) * 200.0
    labels = torch.randint(-1, C, (b,), generator=g)  # -1 = unlabeled
    temperature = draw(st.sampled_from([0.5, 1.0, 4.0]))
    student = torch.randn(b, C, generator=g) * scale
    features = torch.randn(b, F, generator=g)
    return k, z, labels, temperature, student, features


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=teacher_batches())
def test_weights_and_target_are_distributions(name, batch):
    k, z, labels, temperature, student, features = batch
    agg = aggregator(name, k)
    target, weights, temps = agg(z, labels, temperature, student_logits=student, features=features)
    b = z.shape[1]
    assert weights.shape == (b, k) and target.shape == (b, C)
    assert torch.isfinite(weights).all() and torch.isfinite(target).all()
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(b), atol=1e-5), weights
    assert (target >= 0).all()
    assert torch.allclose(target.sum(1), torch.ones(b), atol=1e-5), target
    if temps is not None:
        assert temps.shape == (b, k) and (temps > 0).all()
