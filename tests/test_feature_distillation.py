"""Issue 4: FitNet hints, OFA and InfoNCE losses, projectors, layer hooks, model blocks, and the
features / tas / assistant recipes end to end through the CLI."""
import json
import math

import numpy as np
import pytest
import torch
import yaml

from fault_injection import interrupted_at
from mtkd.cli import main
from mtkd.errors import ConfigError
from mtkd.io import load_torch
from mtkd.losses import (LOSSES, hint_loss, hint_loss_per_sample, infonce_loss, infonce_loss_per_sample, ofa_loss,
                         ofa_loss_per_sample, spatial_smooth)
from mtkd.models import build_model, count_params
from mtkd.models.blocks import model_blocks, run_blocks
from mtkd.models.layers import LayerFeatures
from mtkd.models.projectors import Projector


# ---------------------------------------------------------------- losses, by hand

def test_hint_loss_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # sample 0: (0 + 4) / 2 = 2; sample 1: (1 + 1) / 2 = 1
    assert hint_loss_per_sample(s, t).tolist() == [2.0, 1.0]
    assert hint_loss(s, t).item() == pytest.approx(1.5)
    assert hint_loss(s, t, torch.tensor([1.0, 3.0])).item() == pytest.approx((2 + 3) / 4)
    with pytest.raises(ValueError, match="project"):
        hint_loss(s, t[:, :1])


def test_ofa_loss_by_hand():
    student = torch.zeros(2, 2)  # log q = [ln 0.5, ln 0.5]
    target = torch.tensor([[0.75, 0.25], [0.75, 0.25]])
    labels = torch.tensor([0, -1])  # the second sample is unlabeled: no target-class term
    # labeled, gamma 2: target class (0.75 + 1)^2 - 1 = 2.0625, other 0.25^2 = 0.0625 -> 2.125 ln 2
    # unlabeled: 0.75^2 + 0.25^2 = 0.625 -> 0.625 ln 2
    per = ofa_loss_per_sample(student, target, labels, gamma=2.0)
    assert per.tolist() == pytest.approx([2.125 * math.log(2), 0.625 * math.log(2)], rel=1e-6)
    # gamma 1 is the cross-entropy to the target: -(0.75 ln q0 + 0.25 ln q1), here with T = 2
    s = torch.tensor([[2.0, 0.0]])
    q = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    expected = -(0.75 * np.log(q[0]) + 0.25 * np.log(q[1]))
    assert ofa_loss(s, target[:1], torch.tensor([1]), gamma=1.0, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_by_hand():
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: e1, e2
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # similarities [[1, 0], [0, 1]] / tau; loss_i = -log(e^{1/tau} / (e^{1/tau} + 1)) = log(1 + e^{-1/tau})
    for tau in (1.0, 0.5):
        expected = math.log(1 + math.exp(-1 / tau))
        assert infonce_loss_per_sample(q, k, tau).tolist() == pytest.approx([expected, expected], rel=1e-6)
    # a swapped key: sample 0's positive is now orthogonal to it, its negative identical
    swapped = infonce_loss_per_sample(q, k.flip(0), 1.0)
    assert swapped[0].item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert infonce_loss(q, k, 1.0, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_spatial_smooth_averages_positions():
    x = torch.tensor([[[1.0, 3.0, 5.0, 7.0], [0.0, 0.0, 2.0, 2.0]]])  # [B=1, C=2, L=4]
    assert spatial_smooth(x, 1).tolist() == [[4.0, 1.0]]
    assert spatial_smooth(x, 2).tolist() == [[2.0, 6.0, 0.0, 2.0]]
    assert spatial_smooth(torch.ones(3, 5)).shape == (3, 5)  # vectors pass through


def test_new_losses_are_listed():
    assert {"hint", "ofa", "infonce"} <= set(LOSSES)


# ---------------------------------------------------------------- projectors, hooks, blocks

@pytest.mark.parametrize("in_shape, in_layout, out_shape, out_layout", [
    ((16,), "vector", (8, 5), "channels"),     # MLP features -> CNN feature map
    ((8, 5), "channels", (10, 32), "tokens"),  # CNN feature map -> transformer tokens
    ((40, 64), "tokens", (25,), "vector"),     # GRU outputs -> a vector
    ((4, 3, 3), "channels", (6, 9), "channels"),  # image feature map -> 1-D feature map
])
def test_projector_maps_mismatched_shapes(in_shape, in_layout, out_shape, out_layout):
    proj = Projector(in_shape, in_layout, out_shape, out_layout)
    x = torch.randn(3, *in_shape, requires_grad=True)
    y = proj(x)
    assert y.shape == (3, *out_shape)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in proj.parameters())


def test_projector_layouts_by_hand():
    # tokens [T=2, D=1] -> channels [C=1, L=2] with an identity 1x1 conv: the same numbers, transposed
    proj = Projector((2, 1), "tokens", (1, 2), "channels")
    with torch.no_grad():
        proj.local.weight.fill_(1.0)
        proj.local.bias.zero_()
    assert proj.globl is None  # equal lengths: positions are not mixed
    assert proj(torch.tensor([[[3.0], [4.0]]])).tolist() == [[[3.0, 4.0]]]
    assert Projector((2, 1), "tokens", (1, 2), "channels", kernel=3, mix_positions=True).globl is not None


def test_layer_hooks_capture_named_layers():
    torch.manual_seed(0)
    cnn = build_model("cnn1d", (40,), 10, channels=4)
    gru = build_model("gru", (40,), 10, hidden=6)
    x = torch.randn(2, 40)
    feats = LayerFeatures(cnn, ["features.1", None])
    cnn(x)
    by_hand = torch.relu(cnn.features[0](x.unsqueeze(1)))
    assert torch.allclose(feats.values["features.1"], by_hand)
    assert feats.layout("features.1") == "channels" and feats.values[None].shape == (2, 4 * 5)  # 40 -> 19 -> 10 -> 5 positions
    g = LayerFeatures(gru, ["rnn"])
    gru(x)
    assert g.values["rnn"].shape == (2, 40, 6) and g.layout("rnn") == "tokens"  # the GRU's output sequence
    feats.remove()


def test_wrong_layer_name_lists_the_models_layers():
    mlp = build_model("mlp", (40,), 10, hidden=[8])
    with pytest.raises(ConfigError, match=r"has no layer 'fc1'; its layers are: 0, 1, 2, 3"):
        LayerFeatures(mlp, ["fc1"], "student")


@pytest.mark.parametrize("arch, size", [("cnn1d", {}), ("mlp", {}), ("mlp", {"hidden": []}), ("gru", {}),
                                        ("gru", {"layers": 2, "bidirectional": True}), ("transformer", {})])
def test_blocks_compose_to_the_same_model(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, (40,), 10, **size)
    params = count_params(model)
    x = torch.randn(3, 40)
    blocks = model_blocks(model)
    assert torch.allclose(blocks.head(run_blocks(blocks.body, x)), model(x), atol=1e-6)
    assert count_params(model) == params  # nothing added to the model
    covered = {id(p) for stage in [*blocks.body, blocks.head] for p in stage.parameters()}
    assert covered == {id(p) for p in model.parameters()}


# ---------------------------------------------------------------- recipes through the CLI

def _config(tmp_path, recipe, student=None, teachers=None, **distill):
    raw = {
        "seed": 0,
        "data": {"name": "mnist1d", "num_samples": 300, "unlabeled": 100},
        "teachers": teachers or [
            {"name": "cnn", "arch": "cnn1d", "channels": 6, "train": {"steps": 20, "eval_every": 10}},
            {"name": "tr", "arch": "transformer", "dim": 8, "heads": 2, "layers": 2,
             "train": {"steps": 20, "eval_every": 10}},
        ],
        "student": student or {"arch": "mlp", "hidden": [16]},
        "distill": {"recipe": recipe, "steps": 12, "batch_size": 32, "eval_every": 6, "log_every": 3,
                    "checkpoint_every": 6, **distill},
        "output": {"plots": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _last_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["stage"] == "distill" and "loss" in r][-1]


def test_features_recipe_hints_from_several_layers_and_teachers(tmp_path):
    hints = [{"student": "1", "teacher": {"cnn": "features.1", "tr": "encoder.layers.0"}},  # per-teacher layers
             {"teacher": {"tr": None}, "weight": 0.5}]  # penultimate features, one teacher only
    cfg = _config(tmp_path, "features", hints=hints, aggregator="weighted")
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    last = _last_losses(out)
    assert {"loss", "ce", "kd", "hint", "weight/cnn", "weight/tr"} <= set(last) and last["hint"] > 0
    state = load_torch(out / "student.pt")["state_dict"]
    assert "1.weight" in state  # the student file holds the student only, not the projectors


def test_features_recipe_projectors_are_trained_and_checkpointed(tmp_path):
    from mtkd.aggregation import AggregatorContext, build_aggregator
    from mtkd.recipes import FeaturesRecipe
    from mtkd.recipes.features import FeaturesOptions
    from mtkd.teachers import FrozenTeacher

    torch.manual_seed(0)
    student = build_model("cnn1d", (40,), 10, channels=4)
    teachers = [FrozenTeacher(build_model("gru", (40,), 10, hidden=6), "gru"),
                FrozenTeacher(build_model("transformer", (40,), 10, dim=8, heads=2), "tr")]
    agg = build_aggregator("mean", AggregatorContext(teachers, 10), None)
    opts = FeaturesOptions(hints=[{"student": "features.3", "teacher": {"gru": "rnn", "tr": "encoder.layers.1"}}])
    x, y = torch.randn(5, 40), torch.tensor([0, 1, 2, -1, 4])
    recipe = FeaturesRecipe(student, teachers, agg, options=opts, example=x)
    assert any(n.startswith("projectors.") for n, _ in recipe.named_parameters())
    assert all(not p.requires_grad for t in teachers for p in t.model.parameters())
    losses = recipe.step(x, y, None)
    # the hint term by hand: both teachers weigh 1/2 for every sample
    s_feat = torch.relu(student.features[2](torch.relu(student.features[0](x.unsqueeze(1)))))
    with torch.no_grad():
        t_gru = teachers[0].model.rnn(x.unsqueeze(-1))[0]  # [B, 40, 6]
        tr = teachers[1].model
        tokens = tr.embed(x.reshape(5, 10, 4)) + tr.pos
        t_tr = tr.encoder.layers[1](tr.encoder.layers[0](tokens))
    mse = lambda a, b: ((a - b) ** 2).flatten(1).mean(1)  # noqa: E731
    expected = 0.5 * (mse(recipe.projectors["l0_t0"](s_feat), t_gru) + mse(recipe.projectors["l0_t1"](s_feat), t_tr))
    assert losses["hint"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    losses["loss"].backward()
    assert recipe.projectors["l0_t0"].local.weight.grad is not None
    assert any(k.startswith("projectors.") for k in recipe.state_dict())  # saved with the checkpoint


def test_wrong_hint_layer_is_refused_before_training(tmp_path, capsys):
    cfg = _config(tmp_path, "features", hints=[{"teacher": {"tr": "encoder.layer.0"}}])
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "distill.hints[0].teacher (tr): Transformer has no layer 'encoder.layer.0'" in err
    assert "encoder.layers.0, encoder.layers.0.self_attn" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("student, teacher", [
    ({"arch": "cnn1d", "channels": 4}, {"name": "gru", "arch": "gru", "hidden": 8}),  # CNN <- GRU
    ({"arch": "transformer", "dim": 8, "heads": 2}, {"name": "cnn", "arch": "cnn1d", "channels": 6}),  # the reverse
])
def test_tas_recipe_cross_architecture(tmp_path, student, teacher):
    teacher = dict(teacher, train={"steps": 10, "eval_every": 10})
    cfg = _config(tmp_path, "tas", student=student, teachers=[teacher], steps=6, ofa_gamma=1.5, smooth_bins=2)
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    last = _last_losses(out)
    for term in ("kd", "ofa_teacher_assistant", "ofa_assistant_student", "nce_teacher_student",
                 "nce_teacher_assistant", "nce_assistant_student", "ce_assistant"):
        assert math.isfinite(last[term]), term
    assert json.loads((out / "summary.json").read_text())["recipe"] == "tas"


def _tas(student_arch, teacher_arch, **options):
    from mtkd.aggregation import AggregatorContext, build_aggregator
    from mtkd.recipes import TasRecipe
    from mtkd.recipes.tas import TasOptions
    from mtkd.teachers import FrozenTeacher

    torch.manual_seed(0)
    kwargs = {"cnn1d": {"channels": 4}, "transformer": {"dim": 8, "heads": 2, "layers": 2}}
    student = build_model(student_arch, (40,), 10, **kwargs[student_arch])
    teacher = build_model(teacher_arch, (40,), 10, **dict(kwargs[teacher_arch], **({"channels": 6} if teacher_arch == "cnn1d" else {})))
    teachers = [FrozenTeacher(teacher, "t")]
    agg = build_aggregator("mean", AggregatorContext(teachers, 10), None)
    x, y = torch.randn(6, 40), torch.tensor([0, 1, 2, 3, -1, 5])
    return TasRecipe(student, teachers, agg, options=TasOptions(**options), example=x), student, teacher, x, y


def _train_two_steps(recipe, x, y):
    opt = torch.optim.SGD([p for p in recipe.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        losses = recipe.step(x, y, None)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()


def _assert_student_is_its_blocks(recipe, student, x):
    with torch.no_grad():  # the student computed through its blocks is the student itself
        assert torch.allclose(recipe.head(run_blocks(recipe.rest, run_blocks(recipe.early, x))), student(x))


@pytest.mark.parametrize("student_arch, teacher_arch", [("cnn1d", "transformer"), ("transformer", "cnn1d")])
def test_tas_assistant_is_conv_blocks_then_l2g_then_attention_blocks(student_arch, teacher_arch):
    from mtkd.models.projectors import LocalToGlobalProjector

    recipe, student, teacher, x, y = _tas(student_arch, teacher_arch)
    cnn, tr = (student, teacher) if student_arch == "cnn1d" else (teacher, student)
    assert recipe.teacher_first == (teacher_arch == "cnn1d")  # whichever side the CNN is on, it goes first
    # first part: the CNN's first two conv blocks (its own modules, not copies)
    assert [st.layout for st in recipe.assistant_early] == ["channels", "channels"]
    assert [st.parts[0] for st in recipe.assistant_early] == [cnn.features[0], cnn.features[2]]
    # the local-to-global projector: patch embedding, then an attention block, [C, L] of the CNN -> [T, D] tokens
    assert isinstance(recipe.bridge, LocalToGlobalProjector)
    assert isinstance(recipe.bridge.block.self_attn, torch.nn.MultiheadAttention)
    assert recipe.bridge.in_shape == (cnn.features[2].out_channels, 10) and recipe.bridge.out_shape == (10, 8)
    # later part: the transformer's last encoder layer and its head (its own modules)
    assert [st.layout for st in recipe.assistant_late] == ["tokens", "vector"]
    assert recipe.assistant_late[0].parts[0] is tr.encoder.layers[1]
    assert recipe.assistant_late[1].parts[1] is tr.head
    # the paper's weight sharing: besides the student, only the projector, the InfoNCE maps and the temperature train
    student_ids = {id(p) for p in student.parameters()}
    extra = [p for p in recipe.parameters() if p.requires_grad and id(p) not in student_ids]
    maps = [recipe.assistant_to_teacher, recipe.student_to_assistant, *recipe.student_to_teacher]
    assert sum(p.numel() for p in extra) == count_params(recipe.bridge) + sum(count_params(m) for m in maps) + 1
    assert not {id(p) for p in teacher.parameters()} & {id(p) for p in recipe.parameters()}
    # the assistant's logits are those modules composed in that order: its CE is the CE of these logits
    losses = recipe.step(x, y, None)
    with torch.no_grad():
        h = cnn.features[3](cnn.features[2](cnn.features[1](cnn.features[0](x.unsqueeze(1)))))
        tokens = tr.encoder.layers[1](recipe.bridge(h))
        logits = tr.head(tr.norm(tokens.mean(1)))
    assert logits.shape == (6, 10)
    labeled = y >= 0
    expected = torch.nn.functional.cross_entropy(logits[labeled], y[labeled])
    assert losses["ce_assistant"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_tas_total_loss_weights_and_learned_temperature():
    recipe, *_, x, y = _tas("cnn1d", "transformer")
    a = recipe.alpha
    losses = recipe.step(x, y, None)
    expected = ((1 - a) * (losses["ce"] + losses["ce_assistant"])
                + a * (losses["kd"] + losses["ofa_teacher_assistant"] + losses["ofa_assistant_student"])
                + losses["nce_teacher_student"] + losses["nce_teacher_assistant"] + losses["nce_assistant_student"])
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["nce_temperature"].item() == pytest.approx(0.1)
    losses["loss"].backward()
    assert recipe.log_nce_temperature.grad is not None and recipe.log_nce_temperature.grad != 0
    fixed, *_ = _tas("cnn1d", "transformer", learn_nce_temperature=False)
    assert "log_nce_temperature" not in dict(fixed.named_parameters())
    # the temperature's gradient by hand: loss_i = log(1 + e^{-1/tau}) (see test_infonce_by_hand), so
    # d loss / d log tau = tau * e^{-1/tau} / (1 + e^{-1/tau}) / tau^2 = sigmoid(-1/tau) / tau
    log_tau = torch.tensor(math.log(0.5), requires_grad=True)
    q, k = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.eye(2)
    loss = infonce_loss(q, k, log_tau.exp())
    loss.backward()
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    assert log_tau.grad.item() == pytest.approx(2 / (1 + math.exp(2)), rel=1e-5)


def test_tas_assistant_can_train_a_copy_of_the_teachers_blocks():
    recipe, student, tr, x, y = _tas("cnn1d", "transformer", teacher_modules="copy", projector="conv")
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    # the assistant: student's first 2 conv blocks, projector, a copy of the last encoder layer and the head
    late = recipe.assistant_late
    assert len(late) == 2 and torch.equal(late[0].parts[0].linear1.weight, tr.encoder.layers[1].linear1.weight)
    assert late[0].parts[0].linear1.weight is not tr.encoder.layers[1].linear1.weight
    assert recipe.bridge.in_shape == (4, 10) and recipe.bridge.out_shape == (10, 8)  # [C, L] -> [T, D]
    _train_two_steps(recipe, x, y)
    assert all(torch.equal(before[k], v) for k, v in tr.state_dict().items())  # the teacher stays frozen
    assert not torch.equal(late[0].parts[0].linear1.weight, tr.encoder.layers[1].linear1.weight)
    _assert_student_is_its_blocks(recipe, student, x)


def test_tas_shared_teacher_blocks_stay_frozen_and_the_student_learns_through_them():
    recipe, student, tr, x, y = _tas("transformer", "cnn1d")
    before = {k: v.clone() for k, v in tr.state_dict().items()}
    layer = student.encoder.layers[1].linear1.weight
    start = layer.clone()
    _train_two_steps(recipe, x, y)
    assert all(torch.equal(before[k], v) for k, v in tr.state_dict().items())
    assert not torch.equal(start, layer)
    _assert_student_is_its_blocks(recipe, student, x)


def test_tas_split_errors_are_clear(tmp_path, capsys):
    cfg = _config(tmp_path, "tas", teacher_blocks=7)
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "distill.teacher_blocks: 7, but the assistant's teacher has 3 blocks" in capsys.readouterr().err
    drop = _config(tmp_path, "tas", on_teacher_error="drop")
    assert main(["run", str(drop), "--out", str(tmp_path / "run2"), "--no-progress"]) == 2
    assert "recipe 'tas' reads the teachers' inner blocks and supports only 'stop'" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()  # refused before anything was written or trained


def test_assistant_chain_resumes_inside_an_assistant_stage(tmp_path, capsys):
    chain = [{"arch": "cnn1d", "channels": 4, "name": "ta"}, [{"arch": "mlp", "hidden": [12]}, {"arch": "mlp", "hidden": [8]}]]
    cfg = _config(tmp_path, "assistant", assistants=chain, assistant_steps=12)
    out, unbroken = tmp_path / "run", tmp_path / "unbroken"
    with interrupted_at(9):  # Ctrl-C in the first assistant's stage, after its checkpoint at step 6
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 130
    assert (out / "checkpoints" / "assistant-ta.pt").exists() and not (out / "assistants").exists()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(unbroken), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(a["name"], a["level"]) for a in summary["assistants"]] == [("ta", 1), ("assistant2_1", 2), ("assistant2_2", 2)]
    assert {"assistant/ta", "assistant/assistant2_1", "assistant/assistant2_2", "distill"} <= set(summary["stages"])
    assert {"weight/assistant2_1", "weight/assistant2_2"} <= set(_last_losses(out))  # the student's teachers
    assert "assistant (level 2)" in (out / "report.md").read_text()
    a, b = load_torch(out / "student.pt")["state_dict"], load_torch(unbroken / "student.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed chain gives the same student


def test_assistant_chain_errors(tmp_path, capsys):
    bad_arch = _config(tmp_path, "assistant", assistants=[{"arch": "resnet"}])
    assert main(["run", str(bad_arch), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert "distill.assistants[0].arch: unknown model 'resnet'" in capsys.readouterr().err
    clash = _config(tmp_path, "assistant", assistants=[{"arch": "mlp", "name": "cnn"}])
    assert main(["run", str(clash), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "'cnn' is also a teacher's name" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["features", "tas"])
def test_feature_recipes_through_the_python_api(recipe):
    import mtkd

    torch.manual_seed(0)
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    teacher = build_model("gru", (40,), 10, hidden=6)
    student = build_model("cnn1d", (40,), 10, channels=4)
    before = student.head.weight.clone()
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, y), 16, seed=0)
    out = mtkd.distill(student, {"gru": teacher}, loader, recipe=recipe, steps=3, progress=False)
    assert out is student and not torch.equal(before, student.head.weight)


def test_api_points_takd_to_the_pipeline():
    import mtkd

    x, y = torch.randn(16, 40), torch.randint(0, 10, (16,))
    loader = mtkd.BatchLoader(mtkd.IndexedTensorDataset(x, y), 8, seed=0)
    with pytest.raises(ConfigError, match="trains a chain of stages"):
        mtkd.distill(build_model("mlp", (40,), 10), [build_model("mlp", (40,), 10)], loader, recipe="assistant")


def test_takd_chain_levels_and_the_authors_kd_scale_by_hand():
    """TAKD (Mirzadeh et al. 2020): teacher -> level 1 -> level 2 -> student, each level learning
    from the one before; every stage's loss is the offline (1 - alpha) CE + alpha T^2 KL. Their
    code's nn.KLDivLoss() averages the KL over batch x classes: their KD term is mtkd's / C."""
    from mtkd.losses import kd_ce_loss
    from mtkd.models import parse_model
    from mtkd.recipes.assistant import AssistantOptions, chain

    student = parse_model({"arch": "mlp", "hidden": [32]}, "student")
    default = chain(AssistantOptions(), student)  # one assistant of the student's own arch and size
    assert [[(n, c.arch) for n, c in level] for level in default] == [[("assistant1", "mlp")]]
    levels = chain(AssistantOptions(assistants=[{"arch": "cnn1d", "channels": 16},
                                                [{"arch": "mlp", "hidden": [64]}, {"arch": "cnn1d", "name": "small"}]]),
                   student)
    assert [[n for n, _ in level] for level in levels] == [["assistant1"], ["assistant2_1", "small"]]
    # one stage's loss by hand: 2 samples, C = 2 classes, T = 2, alpha (their lambda) = 0.5
    logits, labels = torch.zeros(2, 2), torch.tensor([0, 1])  # student softmax at T: [0.5, 0.5]
    target = torch.tensor([[0.75, 0.25], [0.5, 0.5]])  # the assistant's softened outputs
    ce = math.log(2)
    kl = [0.75 * math.log(1.5) + 0.25 * math.log(0.5), 0.0]  # per sample, summed over classes
    mtkd_kd = 4 * sum(kl) / 2  # T^2 x mean over samples
    theirs_kd = 4 * sum(kl) / (2 * 2)  # T^2 x mean over batch x classes (nn.KLDivLoss())
    out = kd_ce_loss(logits, labels, target, temperature=2.0, alpha=0.5)
    assert out["kd"].item() == pytest.approx(mtkd_kd, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * ce + 0.5 * mtkd_kd, rel=1e-6)
    assert theirs_kd == pytest.approx(out["kd"].item() / 2, rel=1e-6)  # / C, as the fidelity page states
