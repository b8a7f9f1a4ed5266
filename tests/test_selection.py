"""mtkd select: greedy forward selection on ensemble accuracy plus disagreement, checked on
hand-made probabilities, and the command end to end."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from mtkd.selection import disagreement, ensemble_accuracy, ensemble_log_loss, select_teachers

# 4 validation samples, 2 classes, labels [0, 0, 1, 1]
LABELS = torch.tensor([0, 0, 1, 1])
PROBS = torch.tensor([
    [[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]],  # A: right on samples 0, 1, 2
    [[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]],  # B: right on samples 0, 1, 3
    [[0.2, 0.8], [0.3, 0.7], [0.9, 0.1], [0.9, 0.1]],  # C: wrong on every sample
])
NAMES = ["A", "B", "C"]


def test_scores_by_hand():
    # A+B mean: [.9 .1] [.7 .3] [.45 .55] [.35 .65] -> right on every sample
    assert ensemble_accuracy(PROBS, LABELS, [0, 1]) == 1.0
    # A+B+C mean: class-0 probabilities .667, .567, .6, .533 -> right on 0, 1 only
    assert ensemble_accuracy(PROBS, LABELS, [0, 1, 2]) == 0.5
    # log-loss: A: -(ln .9 + ln .8 + ln .7 + ln .4) / 4; A+B: -(ln .9 + ln .7 + ln .55 + ln .65) / 4
    assert ensemble_log_loss(PROBS, LABELS, [0]) == pytest.approx(0.400365, abs=1e-5)
    assert ensemble_log_loss(PROBS, LABELS, [0, 1]) == pytest.approx(0.372661, abs=1e-5)
    # calibrated: min over T of the log-loss of softmax(log(mean) / T). A+B is right on every
    # sample, so the sharpest T on the grid (0.1) is best: per sample -log softmax(log p / 0.1)
    p_ab = np.array([[0.9, 0.1], [0.7, 0.3], [0.45, 0.55], [0.35, 0.65]])
    sharp = np.log(p_ab) / 0.1
    expected = -np.mean([sharp[i, y] - np.log(np.exp(sharp[i]).sum()) for i, y in enumerate([0, 0, 1, 1])])
    assert ensemble_log_loss(PROBS, LABELS, [0, 1], calibrated=True) == pytest.approx(expected, rel=1e-4)
    # A is wrong on sample 3, so its best T is an interior one, never above the uncalibrated loss
    calibrated_a = ensemble_log_loss(PROBS, LABELS, [0], calibrated=True)
    assert expected < calibrated_a < 0.400365
    correct = PROBS.argmax(-1) == LABELS
    assert disagreement(correct, [0, 1]) == 0.5  # they differ on samples 2 and 3
    assert disagreement(correct, [0, 2]) == 0.75  # A is right on 3 samples C gets wrong
    assert disagreement(correct, [0, 1, 2]) == pytest.approx((0.5 + 0.75 + 0.75) / 3)
    assert disagreement(correct, [1]) == 0.0


def test_greedy_keeps_the_diverse_teacher_and_drops_the_wrong_one():
    chosen, decisions = select_teachers(PROBS, LABELS, NAMES, diversity_weight=0.1)
    # A first (tied with B at 75 %, listed first); B: accuracy 75 -> 100 %, disagreement 0 -> 0.5,
    # score +0.25 + 0.1 * 0.5; C would lower the accuracy to 50 %
    assert chosen == [0, 1]
    assert [d.kept for d in decisions] == [True, True, False]
    assert "most accurate alone (75.0 %)" in decisions[0].reason
    assert "disagreement 0.000 -> 0.500, calibrated log-loss" in decisions[1].reason
    assert "score +0.3000" in decisions[1].reason
    assert "less accurate alone than 0.8 x the ensemble's 100.0 % = 80.0 %" in decisions[2].reason
    # without the accuracy floor, C is still dropped: it would lower the ensemble's accuracy
    _, decisions = select_teachers(PROBS, LABELS, NAMES, diversity_weight=0.1, accuracy_floor=0.0)
    assert "lower the ensemble's accuracy 100.0 -> 50.0 %" in decisions[2].reason


def test_a_copy_of_a_member_adds_nothing():
    probs = torch.cat([PROBS[:1], PROBS[:1]])  # A and a copy of A: same accuracy, log-loss, no disagreement
    chosen, decisions = select_teachers(probs, LABELS, ["A", "A2"], diversity_weight=0.1)
    assert chosen == [0]
    assert "would not lower the ensemble's calibrated log-loss" in decisions[1].reason


def test_diversity_cannot_buy_in_a_teacher_that_lowers_accuracy():
    # with weight 10, A+C would score 0.5 + 7.5 against A+B's 0.75 + 5.0, but C lowers accuracy
    chosen, _ = select_teachers(PROBS, LABELS, NAMES, diversity_weight=10.0, accuracy_floor=0.0)
    assert chosen == [0, 1]


def test_max_teachers():
    chosen, decisions = select_teachers(PROBS, LABELS, NAMES, max_teachers=1)
    assert chosen == [0] and "at most 1 teacher(s)" in decisions[1].reason


def test_partial_teacher_is_scored_with_class_masks():
    # C covers only class 1 (mask) and is then right where it votes: samples 2, 3
    masks = torch.tensor([[True, True], [True, True], [False, True]])
    probs = PROBS.clone()
    probs[2] = torch.tensor([0.0, 1.0])
    # A+C: class 0 = A's alone, class 1 = mean(A, 1): s0 [.9, .55] ok, s1 [.8, .6] ok, s2 [.3, .85] ok, s3 [.6, .7] ok
    assert ensemble_accuracy(probs, LABELS, [0, 2], masks) == 1.0


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "mtkd", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_select_command_writes_a_config_with_the_chosen_subset(tmp_path):
    import mtkd

    torch.manual_seed(0)
    data = mtkd.load_dataset("digits", shape="flat")
    good = mtkd.build_model("mlp", (64,), 10, hidden=[16])
    mtkd.train(good, mtkd.BatchLoader(data.train, 64), steps=150, progress=False)
    torch.save(good.state_dict(), tmp_path / "good.pt")
    torch.save(mtkd.build_model("mlp", (64,), 10, hidden=[16]).state_dict(), tmp_path / "random.pt")
    teacher = {"kind": "state_dict", "arch": "mlp", "hidden": [16]}
    raw = {"data": {"name": "digits", "shape": "flat"},
           "teachers": [{"name": "random", "path": "random.pt", **teacher},
                        {"name": "good", "path": "good.pt", "weight": 2.0, **teacher}],
           "distill": {"steps": 10}}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(raw))
    proc = _run(["select", "pool.yaml", "--out", "chosen.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "good    kept 1st: the most accurate alone" in proc.stdout
    assert "random  dropped" in proc.stdout
    written = yaml.safe_load((tmp_path / "chosen.yaml").read_text())
    assert written["teachers"] == [raw["teachers"][1]] and written["distill"] == raw["distill"]


def test_select_refuses_untrained_teachers(tmp_path):
    raw = {"data": {"name": "digits"}, "teachers": [{"name": "a", "arch": "mlp"}, {"name": "b", "arch": "linear"}]}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(raw))
    proc = _run(["select", "pool.yaml"], tmp_path)
    assert proc.returncode == 2 and "no trained weights" in proc.stderr
    assert not (tmp_path / "pool-selected.yaml").exists()
