"""Aggregator 'route': domain routing (MOPD) and per-sample lowest-loss teacher, on hand-computed tensors."""
import math

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.aggregation.route import RouteOptions, check_route, min_loss_choice
from mtkd.cli import main
from mtkd.config import parse_config
from mtkd.errors import ConfigError

LN3 = math.log(3.0)


def ctx(names, domains=()):
    return AggregatorContext(teachers=[None] * len(names), num_classes=2, teacher_names=tuple(names),
                             domain_names=tuple(domains))


def test_domain_routing_is_the_mean_of_the_domains_teachers():
    agg = build_aggregator("route", ctx(["t0", "t1", "t2"], ["code", "prose"]),
                           {"by": "domain", "map": {"code": ["t0"], "prose": ["t1", "t2"]}})
    # teacher 0: [0.75, 0.25]; teacher 1: [0.25, 0.75]; teacher 2: [0.5, 0.5] (at T = 1), same on both samples
    z = torch.tensor([[LN3, 0.0], [0.0, LN3], [0.0, 0.0]]).unsqueeze(1).expand(3, 2, 2)
    target, weights, temps = agg(z, torch.tensor([0, 1]), 1.0, domains=torch.tensor([0, 1]))
    assert temps is None
    assert torch.allclose(weights, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]))
    # code -> teacher 0; prose -> mean of [0.25, 0.75] and [0.5, 0.5] = [0.375, 0.625]
    assert torch.allclose(target, torch.tensor([[0.75, 0.25], [0.375, 0.625]]))
    logged = {k: float(v) for k, v in agg.logged().items()}
    assert logged == {"route/t0": 0.5, "route/t1": 0.5, "route/t2": 0.5}


def test_domain_routing_softens_at_temperature_and_needs_domains():
    agg = build_aggregator("route", ctx(["a", "b"], ["x", "y"]), {"by": "domain", "map": {"x": ["b"], "y": ["a"]}})
    z = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])  # [K=2, B=1, C=2]
    target, weights, _ = agg(z, torch.tensor([-1]), 2.0, domains=torch.tensor([0]))
    s3 = math.sqrt(3.0)  # softmax([0, ln3] / 2) = [1, sqrt3] / (1 + sqrt3)
    assert torch.allclose(target, torch.tensor([[1 / (1 + s3), s3 / (1 + s3)]]))
    assert torch.equal(weights, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="needs domains="):
        agg(z, torch.tensor([0]), 1.0)


def test_min_loss_picks_the_lowest_cross_entropy_then_lowest_entropy_on_unlabeled():
    # sample 0 (label 0): CE t0 = -ln 0.75 < t1 = -ln 0.25 -> t0
    # sample 1 (label 1): CE t0 = -ln 0.25 > t1 = -ln 0.75 -> t1
    # sample 2 (unlabeled): t0 uniform (H = ln 2 = 0.693), t1 [0.75, 0.25] (H = 0.562) -> t1
    # sample 3 (unlabeled): both uniform, a tie -> the first teacher
    z = torch.tensor([[[LN3, 0.0], [LN3, 0.0], [0.0, 0.0], [0.0, 0.0]],
                      [[0.0, LN3], [0.0, LN3], [LN3, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([0, 1, -1, -1])
    assert min_loss_choice(z, labels).tolist() == [0, 1, 1, 0]
    agg = build_aggregator("route", ctx(["t0", "t1"]))  # by: min_loss is the default
    target, weights, _ = agg(z, labels, 1.0)
    assert torch.equal(weights, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]))
    assert torch.allclose(target, torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.75, 0.25], [0.5, 0.5]]))
    assert {k: float(v) for k, v in agg.logged().items()} == {"route/t0": 0.5, "route/t1": 0.5}


def test_min_loss_on_tokens_uses_the_next_token_as_label():
    """Language models: logits flattened to [K, N, V] with N masked-in positions; the label is the next token."""
    v = 5
    z = torch.zeros(2, 3, v)
    z[0, :, 2] = 4.0  # teacher 0 is sure of token 2
    z[1, :, 4] = 4.0  # teacher 1 of token 4
    next_tokens = torch.tensor([2, 4, 4])
    assert min_loss_choice(z, next_tokens).tolist() == [0, 1, 1]


def test_min_loss_survives_certain_teachers():
    z = torch.tensor([[[200.0, 0.0]], [[0.0, 200.0]]])  # p = 0 exactly for one class of each teacher
    assert min_loss_choice(z, torch.tensor([1])).tolist() == [1]
    assert min_loss_choice(z, torch.tensor([-1])).tolist() == [0]  # both entropy 0: a tie


@st.composite
def domain_batches(draw):
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 3))
    names = [f"t{i}" for i in range(k)]
    mapping = {f"d{j}": draw(st.lists(st.sampled_from(names), min_size=1, max_size=k, unique=True)) for j in range(d)}
    b = draw(st.integers(1, 5))
    domains = torch.tensor(draw(st.lists(st.integers(0, d - 1), min_size=b, max_size=b)))
    z = torch.randn(k, b, 3, generator=torch.Generator().manual_seed(draw(st.integers(0, 10**6)))) * 5
    return names, mapping, domains, z


@settings(max_examples=60, deadline=None)
@given(batch=domain_batches())
def test_domain_weights_are_distributions_on_the_domains_teachers(batch):
    names, mapping, domains, z = batch
    agg = build_aggregator("route", ctx(names, list(mapping)), {"by": "domain", "map": mapping})
    target, weights, _ = agg(z, torch.full((len(domains),), -1), 2.0, domains=domains)
    assert (weights >= 0).all() and torch.allclose(weights.sum(1), torch.ones(len(domains)))
    assert torch.allclose(target.sum(1), torch.ones(len(domains)), atol=1e-6)
    for row, dom in zip(weights, domains.tolist()):
        teachers = mapping[f"d{dom}"]
        assert {names[i] for i in torch.nonzero(row).flatten().tolist()} == set(teachers)


@pytest.mark.parametrize("options, domains, message", [
    ({"by": "domain", "map": {"code": ["a"], "prose": ["b"], "math": ["a"]}}, ["code", "prose"],
     "unknown domain 'math'"),
    ({"by": "domain", "map": {"code": ["a"], "prose": ["bb"]}}, ["code", "prose"],
     "map.prose: unknown teacher 'bb' (did you mean 'b'?)"),
    ({"by": "domain", "map": {"code": ["a"], "prose": []}}, ["code", "prose"], "map.prose: no teacher"),
    ({"by": "domain", "map": {"code": ["a"]}}, ["code", "prose"], "domain 'prose' has no teacher"),
    ({"by": "domain", "map": {"code": ["a", "a"], "prose": ["b"]}}, ["code", "prose"], "listed twice"),
    ({"by": "domain"}, ["code", "prose"], "needs a map"),
    ({"by": "domain", "map": {"code": ["a"]}}, None, "has none, use by: min_loss"),
    ({"map": {"code": ["a"]}}, ["code"], "only used with by: domain"),
])
def test_bad_routing_configs_are_one_line(options, domains, message):
    with pytest.raises(ConfigError) as exc:
        check_route(RouteOptions.model_validate(options), ["a", "b"], domains)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_route_by_domain_on_a_classification_config_exits_2_before_writing(tmp_path, capsys):
    raw = {"data": {"name": "mnist1d"}, "teachers": [{"name": "a", "arch": "mlp"}],
           "distill": {"aggregator": {"name": "route", "by": "domain", "map": {"x": ["a"]}}}}
    with pytest.raises(ConfigError, match="data set 'mnist1d' has none"):
        parse_config(raw)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    assert not out.exists()
    assert "by: domain needs a data set whose samples have domains" in capsys.readouterr().err
    cfg = parse_config({**raw, "distill": {"aggregator": {"name": "route", "by": "min_loss"}}})
    assert cfg.aggregator_options.by == "min_loss"
    assert cfg.to_dict()["distill"]["aggregator"] == {"name": "route", "by": "min_loss", "map": None}


def text_config(distill):
    return {"data": {"name": "text", "tokenizer": "tok", "seq_len": 8,
                     "domains": {"code": {"paths": ["*.py"]}, "prose": {"paths": ["*.txt"]}}},
            "teachers": [{"name": "coder", "arch": "gpt"}, {"name": "writer", "arch": "gpt"}],
            "student": {"arch": "gpt"}, "distill": distill}


def test_route_by_domain_is_checked_against_the_text_domains_at_load():
    ok = parse_config(text_config({"aggregator": {"name": "route", "by": "domain",
                                                  "map": {"code": ["coder"], "prose": ["writer", "coder"]}}}))
    assert ok.aggregator_options.map == {"code": ["coder"], "prose": ["writer", "coder"]}
    with pytest.raises(ConfigError, match="unknown domain 'math'"):
        parse_config(text_config({"aggregator": {"name": "route", "by": "domain",
                                                 "map": {"code": ["coder"], "prose": ["writer"], "math": ["coder"]}}}))
    with pytest.raises(ConfigError, match="map.prose: unknown teacher 'poet'"):
        parse_config(text_config({"aggregator": {"name": "route", "by": "domain",
                                                 "map": {"code": ["coder"], "prose": ["poet"]}}}))
    with pytest.raises(ConfigError, match="domain 'prose' has no teacher"):
        parse_config(text_config({"aggregator": "route", "by": "domain", "map": {"code": ["coder"]}}))  # flat keys


def test_a_dropped_teacher_leaves_its_samples_to_the_rest():
    """A teacher that failed on a batch gets weight 0 and the others are renormalised, as the recipes'
    TeacherTargets does with every aggregator (mask_weights): the rest of its domain takes its samples,
    or, when the domain has no teacher left, every running teacher."""
    from mtkd.aggregation.base import mask_weights

    agg = build_aggregator("route", ctx(["t0", "t1", "t2"], ["a", "b"]),
                           {"by": "domain", "map": {"a": ["t0", "t1"], "b": ["t2"]}})
    z = torch.randn(3, 2, 4)
    routed = agg(z, torch.tensor([0, 1]), 1.0, domains=torch.tensor([0, 1])).weights  # [B, K]
    assert torch.allclose(routed, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    alive = torch.tensor([False, True, True])  # t0 failed on this batch
    assert torch.allclose(mask_weights(routed, alive), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    alive = torch.tensor([True, True, False])  # t2, domain b's only teacher, failed
    assert torch.allclose(mask_weights(routed, alive), torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]))


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 4), b=st.integers(1, 6), seed=st.integers(0, 10**6), scale=st.sampled_from([0.1, 1.0, 50.0]))
def test_min_loss_choice_is_a_lowest_loss_teacher(k, b, seed, scale):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k, b, 5, generator=g) * scale
    labels = torch.randint(-1, 5, (b,), generator=g)
    choice = min_loss_choice(z, labels)
    logp = torch.log_softmax(z, -1)
    for i in range(b):
        if labels[i] >= 0:
            loss = -logp[:, i, labels[i]]
        else:
            loss = -(logp[:, i].exp() * logp[:, i]).nan_to_num().sum(-1)
        assert loss[choice[i]] <= loss.min() + 1e-5
