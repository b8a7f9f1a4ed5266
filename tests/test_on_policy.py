"""On-policy mode (GKD): which steps sample, the student's continuations, their loss mask, and
reproducibility from (seed, step) alone; tiny random Hugging Face GPT-2 models, no downloads."""
import math

import pytest
import torch
from torch import nn

from mtkd.config import parse_config
from mtkd.errors import ConfigError
from mtkd.on_policy import is_on_policy_step, sample_continuations
from mtkd.options import OnPolicyConfig

transformers = pytest.importorskip("transformers")
V, T = 64, 12


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=V, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


class Bigram(nn.Module):
    """A model without ``generate`` (as mtkd's built-in GPT): logits from the last token only."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, ids):
        return self.table[ids]  # [B, t, V]


def batch(seed=0):
    return torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(seed))


def test_lambda_decides_from_seed_and_step_alone():
    steps = range(2000)
    assert not any(is_on_policy_step(0, s, 0.0) for s in steps)
    assert all(is_on_policy_step(0, s, 1.0) for s in steps)
    share = sum(is_on_policy_step(0, s, 0.3) for s in steps) / len(steps)
    assert 0.27 < share < 0.33
    torch.manual_seed(1)
    first = [is_on_policy_step(5, s, 0.5) for s in range(50)]
    torch.manual_seed(2)  # the global random state plays no part
    assert first == [is_on_policy_step(5, s, 0.5) for s in range(50)]
    assert first != [is_on_policy_step(6, s, 0.5) for s in range(50)]


@pytest.mark.parametrize("kind", ["hf", "loop"])
def test_continuations_keep_the_prompt_and_mask_the_generated_tokens(gpt2, kind):
    model = gpt2 if kind == "hf" else Bigram(torch.randn(V, V))
    ids = batch()
    options = OnPolicyConfig(max_new_tokens=4)
    mode = model.training
    state = torch.get_rng_state()
    out = sample_continuations(model, ids, options, seed=0, step=3)
    assert torch.equal(torch.get_rng_state(), state)  # global random state untouched
    assert out.input_ids.shape == (3, T) and out.input_ids.dtype == torch.long
    assert torch.equal(out.input_ids[:, :T - 4], ids[:, :T - 4])
    assert out.generated[:, T - 4:].all() and not out.generated[:, :T - 4].any()
    # logits at positions T-5 .. T-2 predict the 4 generated tokens
    want = torch.zeros(3, T, dtype=torch.bool)
    want[:, T - 5:T - 1] = True
    assert torch.equal(out.loss_mask, want)
    again = sample_continuations(model, ids, options, seed=0, step=3)
    torch.manual_seed(123)
    assert torch.equal(again.input_ids, out.input_ids)  # same (seed, step): same tokens, whatever the global state
    others = [sample_continuations(model, ids, options, seed=0, step=s).input_ids for s in (4, 5)]
    assert any(not torch.equal(o, out.input_ids) for o in others)
    assert model.training == mode  # put back in the mode it was in


def test_the_student_is_sampled_in_eval_mode_and_put_back(gpt2):
    gpt2.train()
    try:
        sample_continuations(gpt2, batch(), OnPolicyConfig(max_new_tokens=2), seed=0, step=0)
        assert gpt2.training
    finally:
        gpt2.eval()


def test_hf_sampling_is_the_students_distribution_not_top_k(gpt2):
    """At a near-zero temperature sampling is greedy: the tokens are the argmax continuation."""
    ids = batch(1)
    out = sample_continuations(gpt2, ids, OnPolicyConfig(max_new_tokens=3, temperature=1e-6), seed=0, step=0)
    seq = ids[:, :T - 3]
    with torch.no_grad():
        for _ in range(3):
            seq = torch.cat([seq, gpt2(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out.input_ids, seq)
    # a flat student (all logits 0): each token is uniform over the 64, as top-k 50 sampling could never give
    flat = Bigram(torch.zeros(V, V))
    tokens = torch.cat([sample_continuations(flat, batch(s), OnPolicyConfig(max_new_tokens=8), 0, s).input_ids[:, -8:]
                        for s in range(20)])
    assert len(tokens.unique()) > 55


def test_tokens_after_the_first_eos_are_masked():
    table = torch.full((V, V), -30.0)
    table[:, 7] = 30.0  # the student always says 7
    out = sample_continuations(Bigram(table), batch(), OnPolicyConfig(max_new_tokens=4), 0, 0, eos_token_id=7)
    assert (out.input_ids[:, -4:] == 7).all()
    assert out.generated[:, T - 4].all() and not out.generated[:, T - 3:].any()  # EOS itself is kept
    assert out.loss_mask.sum(1).tolist() == [1, 1, 1] and out.loss_mask[:, T - 5].all()


def test_the_teacher_scores_the_students_tokens_with_gradient_on_generated_positions(gpt2):
    from mtkd.cache.tokens import topk_token_divergence

    torch.manual_seed(1)
    teacher = transformers.GPT2LMHeadModel(gpt2.config).eval()
    student = gpt2
    out = sample_continuations(student, batch(), OnPolicyConfig(max_new_tokens=5), seed=0, step=0)
    with torch.no_grad():
        logp = torch.log_softmax(teacher(out.input_ids).logits, -1)  # [B, T, V]: k = V, no tail
    values, ids = logp.sort(-1, descending=True)
    student_logits = student(out.input_ids).logits
    loss = topk_token_divergence(student_logits, values, ids, torch.zeros(3, T), out.loss_mask, "reverse_kl")
    assert torch.isfinite(loss) and loss > 0
    (grad,) = torch.autograd.grad(loss, student_logits)
    assert grad[~out.loss_mask].abs().max() == 0 and grad[out.loss_mask].abs().sum() > 0


def test_config():
    with pytest.raises(ConfigError, match="distill.on_policy: .* needs data.name: text"):
        parse_config({"teachers": [{"name": "a", "arch": "mlp"}], "distill": {"on_policy": {"lambda": 0.5}}})
    with pytest.raises(ConfigError, match="distill.on_policy.lambda"):
        parse_config({"teachers": [{"name": "a", "arch": "mlp"}], "distill": {"on_policy": {"lambda": 1.5}}})
    assert parse_config({"distill": {"recipe": "scratch"}}).to_dict()["distill"]["on_policy"] is None
    assert OnPolicyConfig.model_validate({"lambda": 0.25}).model_dump() == {
        "lambda": 0.25, "max_new_tokens": 32, "temperature": 1.0}
    with pytest.raises(ValueError, match="smaller than the sequence length"):
        sample_continuations(Bigram(torch.zeros(V, V)), batch(), OnPolicyConfig(max_new_tokens=T), 0, 0)


def test_max_new_tokens_must_leave_a_prompt_at_load():
    raw = {"data": {"name": "text", "tokenizer": "tok", "seq_len": 8, "domains": {"a": {"paths": ["*.txt"]}}},
           "teachers": [{"name": "t", "arch": "gpt"}], "student": {"arch": "gpt"},
           "distill": {"on_policy": {"lambda": 0.5, "max_new_tokens": 8}}}
    with pytest.raises(ConfigError, match="max_new_tokens: 8 leaves no prompt in rows of data.seq_len 8"):
        parse_config(raw)
    raw["distill"]["on_policy"]["max_new_tokens"] = 7
    assert parse_config(raw).distill.on_policy.max_new_tokens == 7
    raw["distill"]["recipe"] = "scratch"
    with pytest.raises(ConfigError, match="needs distill.recipe: offline"):
        parse_config(raw)


def lm_recipe(gpt2, seed):
    from mtkd.lm_pipeline import build_lm_recipe
    from mtkd.options import DistillConfig

    d = DistillConfig.model_validate({"loss": "forward_kl", "temperature": 1.0, "alpha": 0.5,
                                      "on_policy": {"lambda": 0.5, "max_new_tokens": 4}})
    torch.manual_seed(3)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=V, n_positions=32,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    student = transformers.GPT2LMHeadModel(config)
    recipe = build_lm_recipe("offline", student, [("t", gpt2)], d, None, V, eos_id=1, pad_id=1, seed=seed)
    return recipe, torch.optim.SGD(student.parameters(), lr=0.5)


def train(recipe, optimizer, steps):
    records = []
    for s in steps:
        x = batch(s).float()  # a TokenDataset row: ids as float
        losses = recipe.step(x, torch.zeros(3, dtype=torch.long), torch.arange(3))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        records.append({k: float(v.detach()) for k, v in losses.items() if not k.startswith("weight/")})
    return records


def test_the_lm_recipe_learns_from_its_own_samples_and_resumes_bit_exactly(gpt2):
    seed = next(s for s in range(100) if len({is_on_policy_step(s, t, 0.5) for t in range(2, 5)}) == 2)
    recipe, optimizer = lm_recipe(gpt2, seed)
    full = train(recipe, optimizer, range(5))
    kinds = [r["on_policy"] for r in full]
    assert kinds == [float(is_on_policy_step(seed, t, 0.5)) for t in range(5)] and 0 < sum(kinds[2:]) < 3
    for r in full:
        assert ("ce" in r) == (r["on_policy"] == 0.0) and math.isfinite(r["loss"]) and r["kd"] > 0
    first, optimizer_a = lm_recipe(gpt2, seed)
    train(first, optimizer_a, range(2))
    state, optim_state = first.state_dict(), optimizer_a.state_dict()
    resumed, optimizer_b = lm_recipe(gpt2, seed)
    resumed.load_state_dict(state)
    optimizer_b.load_state_dict(optim_state)
    assert int(resumed.steps_done) == 2
    torch.manual_seed(99)  # a resumed process starts from another global random state: sampling must not see it
    assert train(resumed, optimizer_b, range(2, 5)) == full[2:]


def test_sampled_tokens_are_unlabeled_for_the_aggregator(gpt2, monkeypatch):
    import mtkd.recipes.lm_offline as lm_offline

    seen = []
    real = lm_offline.aggregated_token_loss

    def spy(aggregator, student_rows, teacher_rows, labels, *args):
        seen.append(labels.clone())
        return real(aggregator, student_rows, teacher_rows, labels, *args)

    monkeypatch.setattr(lm_offline, "aggregated_token_loss", spy)
    seed = next(s for s in range(100) if is_on_policy_step(s, 0, 0.5) and not is_on_policy_step(s, 1, 0.5))
    recipe, optimizer = lm_recipe(gpt2, seed)
    train(recipe, optimizer, range(2))
    assert (seen[0] == -1).all() and len(seen[0]) > 0  # step 0: on-policy
    assert (seen[1] >= 0).all()  # step 1: the data's next tokens
