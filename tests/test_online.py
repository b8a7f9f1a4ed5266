"""Online recipes (mutual, okddip, ffl, afd, codistillation): losses against hand-computed
values, each recipe end to end through the CLI, and codistillation under torchrun on CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtkd.cli import main
from mtkd.models import MODELS
from mtkd.recipes.afd import AfdRecipe, lsgan_discriminator_loss, lsgan_generator_loss
from mtkd.recipes.codistillation import codistillation_target, flat_state, load_flat_state
from mtkd.recipes.ffl import ffl_kd_terms
from mtkd.recipes.mutual import mutual_kd
from mtkd.recipes.okddip import attention_targets
from mtkd.recipes.peers import rampup

TESTS = Path(__file__).parent


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kl(p, q):  # KL(p || q) per row
    return (p * (np.log(p) - np.log(q))).sum(-1)


LOGITS = np.array([[[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]],      # peer 0: [B=2, C=3]
                   [[0.5, 0.5, 2.0], [1.5, 0.0, -0.5]],      # peer 1
                   [[-1.0, 1.0, 0.0], [0.2, 0.3, 0.1]]])     # peer 2


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_mutual_kd_matches_hand_computed_dml_terms(t):
    p = _softmax(LOGITS / t)
    expected = [np.mean([_kl(p[l], p[k]).mean() for l in range(3) if l != k]) * t * t for k in range(3)]
    got = mutual_kd(torch.tensor(LOGITS, dtype=torch.float32), t, "peers")
    assert np.allclose(got.numpy(), expected, atol=1e-5)
    mean_others = [(p.sum(0) - p[k]) / 2 for k in range(3)]
    expected_e = [_kl(mean_others[k], p[k]).mean() * t * t for k in range(3)]
    got_e = mutual_kd(torch.tensor(LOGITS, dtype=torch.float32), t, "ensemble")
    assert np.allclose(got_e.numpy(), expected_e, atol=1e-5)


def test_mutual_kd_gradient_reaches_only_the_learner():
    z = torch.tensor(LOGITS[:2], dtype=torch.float32, requires_grad=True)
    mutual_kd(z, 1.0)[0].backward()  # peer 0's term: peer 1 is its constant target
    assert z.grad[0].abs().sum() > 0 and z.grad[1].abs().sum() == 0


def test_codistillation_target_is_mean_of_the_other_copies():
    t = 2.0
    p = _softmax(LOGITS / t)
    got = codistillation_target(torch.tensor(LOGITS, dtype=torch.float32), 1, t)
    assert np.allclose(got.numpy(), (p[0] + p[2]) / 2, atol=1e-6)


def test_flat_state_round_trip_copies_weights_and_buffers():
    a = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    a[1].running_mean.fill_(0.25)
    load_flat_state(b, flat_state(a))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_okddip_attention_targets_by_hand():
    z = LOGITS  # [m=3, B=2, C=3]
    q = np.array([[[1.0, 0.0], [0.5, 1.0]], [[0.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [-1.0, 0.5]]])  # [m, B, d]
    k = np.array([[[0.5, 0.5], [1.0, 0.0]], [[2.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [0.5, 0.5]]])
    expected = np.zeros_like(z)
    for b in range(2):
        for a in range(3):
            energy = np.array([q[a, b] @ k[f, b] for f in range(3)])
            att = np.exp(energy) / np.exp(energy).sum()
            expected[a, b] = sum(att[f] * z[f, b] for f in range(3))
    as_t = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    targets, attention = attention_targets(as_t(z), as_t(q), as_t(k))
    assert np.allclose(targets.numpy(), expected, atol=1e-5)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 3))


def test_ffl_kd_terms_by_hand():
    t = 3.0
    sub, fused = LOGITS[:2], LOGITS[2]  # two sub-networks and the fused classifier
    p_fused = _softmax(fused / t)
    expected_sub = [_kl(p_fused, _softmax(sub[i] / t)).mean() * t * t for i in range(2)]
    expected_fused = _kl(_softmax(sub.mean(0) / t), p_fused).mean() * t * t
    as_t = lambda v: torch.tensor(v, dtype=torch.float32, requires_grad=True)  # noqa: E731
    z_sub, z_fused = as_t(sub), as_t(fused)
    kd_sub, kd_fused = ffl_kd_terms(z_sub, z_fused, t)
    assert np.allclose(kd_sub.detach().numpy(), expected_sub, atol=1e-5)
    assert float(kd_fused.detach()) == pytest.approx(expected_fused, abs=1e-5)
    kd_fused.backward()  # the fused classifier learns from the ensemble; the sub-networks are its constant target
    assert z_sub.grad is None and z_fused.grad.abs().sum() > 0


def test_lsgan_losses_by_hand():
    real, fake = torch.tensor([[0.5], [1.5]]), torch.tensor([[0.2], [-0.4]])
    assert float(lsgan_discriminator_loss(real, fake)) == pytest.approx((0.25 + 0.25) / 2 + (0.04 + 0.16) / 2)
    assert float(lsgan_generator_loss(fake)) == pytest.approx((0.64 + 1.96) / 2)


def test_afd_step_moves_discriminators_only_with_their_own_optimizer():
    torch.manual_seed(0)
    net = lambda: torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))  # noqa: E731
    recipe = AfdRecipe(net(), peers=[net()])
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    before = [p.clone() for p in recipe.discriminators.parameters()]
    losses = recipe.step(x, y, None)
    after = [p.clone() for p in recipe.discriminators.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the recipe's own D step ran
    losses["loss"].backward()  # the peers' loss: gradients for the peers, none for the discriminators
    assert all(p.grad is None for p in recipe.discriminators.parameters())
    assert all(p.grad is not None for p in recipe.student.parameters())
    state = recipe.state_dict()
    assert "_extra_state" in state and state["_extra_state"]["disc_optimizer"]["state"]  # Adam moments saved


def test_rampup_is_sigmoid_shaped_and_reaches_one():
    assert rampup(0, 100) == pytest.approx(np.exp(-5.0))
    assert rampup(50, 100) == pytest.approx(np.exp(-5.0 * 0.25))
    assert rampup(100, 100) == rampup(7, 0) == 1.0


def _write(tmp_path, raw):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _online_config(tiny_raw_config, recipe, **options):
    raw = dict(tiny_raw_config)
    raw.pop("teachers")  # online recipes need no pre-trained teacher
    raw["distill"] = {**raw["distill"], "recipe": recipe, "steps": 12, "baseline": False, **options}
    return raw


def test_codistillation_under_torchrun_exchanges_weights_between_processes(tmp_path, tiny_raw_config):
    """Two CPU processes (gloo): at every exchange each process's stale copy of the other equals
    the weights the other process sent; the run finishes and rank 0 writes summary.json."""
    raw = _online_config(tiny_raw_config, "codistillation", exchange_every=4, steps=10)
    cfg, out, dump = _write(tmp_path, raw), tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    env = dict(os.environ, MTKD_EXCHANGE_DUMP=str(dump), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(TESTS / "codistillation_worker.py"), "run", str(cfg), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(dump / "rank0.pt"), torch.load(dump / "rank1.pt")
    # exchanges before steps 1, 5 and 9, and the final one after step 10
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == [0, 4, 8, 10]
    for a, b in zip(r0, r1):
        assert torch.equal(a["stale"][1], b["sent"]) and torch.equal(b["stale"][0], a["sent"])
        assert not torch.equal(a["sent"], b["sent"])  # two different copies, not one model twice
    assert not torch.equal(r0[1]["sent"], r0[2]["sent"])  # the copies trained between exchanges
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "codistillation" and summary["timing"]["steps"] == 10
    assert [p["name"] for p in summary["peers"]] == ["copy2"]
    # rank 0 reports copy 2 as it was at the final exchange, and saves it
    saved = torch.load(out / "peers" / "copy2.pt")["state_dict"]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    net.load_state_dict(saved)
    assert torch.equal(flat_state(net), r1[-1]["sent"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".mtkd-run")) == sorted(
        ["checkpoints", "config.yaml", "metrics.jsonl", "peers", "peers.json", "report.md", "stages.json",
         "student.pt", "student_best.pt", "summary.json", "tensorboard"])
    assert not list((out / "checkpoints").iterdir())  # both ranks removed their finished checkpoints


ONLINE = {  # recipe -> options for a few steps on tiny models
    "afd": {"peers": [{"name": "wide", "arch": "mlp", "hidden": [32, 16]}], "disc_hidden": 8},
    "mutual": {"peers": [{"name": "cnn", "arch": "cnn1d", "channels": 4}, {"arch": "mlp", "hidden": [8]}]},
    "codistillation": {"exchange_every": 3, "copies": 3},
    "ffl": {"peers": [{"name": "cnn", "arch": "cnn1d", "channels": 4}], "fusion_hidden": 8},
    "okddip": {"peers": [{"arch": "mlp", "hidden": [8]}, {"arch": "cnn1d", "channels": 2}], "rampup": 0.5},
}


@pytest.mark.parametrize("recipe", sorted(ONLINE))
def test_online_recipe_runs_through_the_cli_without_teachers(tmp_path, capsys, tiny_raw_config, recipe):
    raw = _online_config(tiny_raw_config, recipe, **ONLINE[recipe])
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == recipe and summary["teachers"] == [] and summary["timing"]["steps"] == 12
    assert summary["peers"] and all({"name", "role", "arch", "params", "accuracy"} <= set(p) for p in summary["peers"])
    printed = capsys.readouterr().out
    for p in summary["peers"]:
        assert p["name"] in printed  # a row of the comparison table
        assert (out / "peers" / f"{p['name']}.pt").is_file() == (p["arch"] in MODELS)  # built-in archs are saved
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["stage"] == "distill" and "loss" in r][-1]
    assert {"ce", "kd"} <= set(last) and np.isfinite(last["loss"])


@pytest.mark.parametrize("recipe", sorted(ONLINE))
def test_interrupted_online_run_resumes_to_the_same_weights(tmp_path, capsys, tiny_raw_config, recipe):
    """Ctrl-C at step 25 (checkpoint at 20), run again: the student, every peer and the fused model
    end bit for bit as in an unbroken run (peers, discriminators, fusion module and their
    optimizer state are all in the checkpoint)."""
    from fault_injection import interrupted_at
    from mtkd.recipes import RECIPES

    raw = _online_config(tiny_raw_config, recipe, **ONLINE[recipe])
    raw["distill"].update(steps=40, checkpoint_every=10)
    cfg = _write(tmp_path, raw)
    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    with interrupted_at(25, RECIPES[recipe]):
        assert main(["run", str(cfg), "--out", str(killed), "--no-progress"]) == 130
    assert not (killed / "summary.json").exists()
    assert main(["run", str(cfg), "--out", str(killed), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert main(["run", str(cfg), "--out", str(unbroken), "--no-progress"]) == 0
    files = ["student.pt"] + sorted(f"peers/{p.name}" for p in (unbroken / "peers").iterdir())
    for name in files:
        a, b = torch.load(killed / name)["state_dict"], torch.load(unbroken / name)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    acc = lambda run: [p["accuracy"] for p in json.loads((run / "summary.json").read_text())["peers"]]  # noqa: E731
    assert acc(killed) == acc(unbroken)  # includes the fused classifier of ffl


def test_mutual_learning_from_the_python_api():
    import mtkd

    torch.manual_seed(0)
    data = mtkd.load_dataset("mnist1d", num_samples=300)
    student = mtkd.build_model("mlp", data.input_shape, 10, hidden=[16])
    before = [p.clone() for p in student.parameters()]
    out = mtkd.distill(student, [], mtkd.BatchLoader(data.train, batch_size=32), recipe="mutual",
                       peers=[{"arch": "cnn1d", "channels": 4}], steps=5, temperature=1.0, alpha=0.5, progress=False)
    assert out is student and any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


@pytest.mark.parametrize("recipe, options, message", [
    ("mutual", {"peers": [{"arch": "resnet"}]}, "distill.peers[0].arch: unknown model 'resnet'; choose one of:"),
    ("mutual", {"peers": [{"arch": "mlp", "size": 3}]}, "distill.peers[0].size: unknown key for model 'mlp'"),
    ("mutual", {"peers": [{"name": "a", "arch": "mlp"}, {"name": "a", "arch": "mlp"}]},
     "distill.peers: the name 'a' is used twice"),
    ("afd", {"features": "maps"}, "recipe 'afd': features: maps, but student has no 2-D feature map"),
    ("ffl", {"features": "maps", "peers": [{"arch": "cnn1d"}]}, "recipe 'ffl': features: maps, but student has no"),
    ("afd", {"features": "pixels"}, "features"),
    ("okddip", {"peers": [{"arch": "mlp"}]}, "recipe 'okddip' needs at least two auxiliary peers"),
    ("ffl", {"peers": [{"name": "fused", "arch": "mlp"}]}, "the peer name 'fused' is taken"),
])
def test_bad_cohorts_are_one_line_errors_before_anything_is_written(tmp_path, capsys, tiny_raw_config, recipe,
                                                                    options, message):
    raw = _online_config(tiny_raw_config, recipe, **options)
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtkd: error:") and "\n" not in err and message in err, err
    assert not out.exists()


def test_ffl_kd_terms_are_weighted_by_the_consistency_rampup():
    # the authors' train_FFL.py: loss = CE + w(epoch) * KL terms, w the sigmoid ramp-up; here per step
    from mtkd.recipes.ffl import FflOptions, FflRecipe

    torch.manual_seed(0)
    net = lambda: torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))  # noqa: E731
    recipe = FflRecipe(net(), peers=[net()], num_classes=3, alpha=0.4, steps=10, options=FflOptions(rampup=0.5))
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    for step in range(7):
        out = recipe.step(x, y, None)
        w = np.exp(-5.0 * (1 - step / 5) ** 2) if step < 5 else 1.0  # ramp over 0.5 * 10 steps
        ce = out["ce"] + out["ce/peer1"] + out["ce/fused"]
        kd = out["kd"] + out["kd/peer1"] + out["kd/fused"]
        assert out["loss"].item() == pytest.approx((0.6 * ce + 0.4 * w * kd).item(), rel=1e-5)


def test_codistillation_burns_in_a_tenth_of_the_steps_by_default():
    # Algorithm 1 of Anil et al. (2018): ordinary training for n_burn_in steps, then distillation
    from mtkd.recipes.codistillation import CodistillationRecipe

    torch.manual_seed(0)
    recipe = CodistillationRecipe(torch.nn.Linear(6, 3), steps=30, alpha=0.5)
    assert recipe.burn_in == 3
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    kds = [recipe.step(x, y, None)["kd"].item() for _ in range(5)]
    assert kds[:3] == [0.0, 0.0, 0.0] and kds[3] > 0 and kds[4] > 0
    out = recipe.step(x, y, None)  # after the burn-in: (1 - alpha) CE + alpha KD per copy, summed
    assert out["loss"].item() > 0
    assert CodistillationRecipe(torch.nn.Linear(6, 3), steps=30, options=type(recipe.options)(burn_in=0)).burn_in == 0
