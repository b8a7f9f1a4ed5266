"""Reports: ECE and the agreement matrix against hand-computed values, report.md with every
plot present, ``mtkd report`` over several runs with mean and standard deviation over seeds."""
import copy
import json
import math

import numpy as np
import pytest
import torch

from mtkd.cli import main
from mtkd.config import parse_config
from mtkd.data import load_dataset
from mtkd.evaluation import predict_probs
from mtkd.models.files import load_model_file
from mtkd.pipeline import run_pipeline
from mtkd.report.agreement import agreement_matrix
from mtkd.report.calibration import expected_calibration_error, reliability_bins
from mtkd.report.compare import mean_std

PNG = b"\x89PNG\r\n\x1a\n"


def test_ece_of_four_predictions_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    # 5 bins of width 0.2. Confidences: 0.9 -> (0.8, 1] right; 0.6 -> (0.4, 0.6] wrong;
    # 0.8 -> (0.6, 0.8] right; 0.55 -> (0.4, 0.6] right.
    # ECE = 2/4 |0.5 - 0.575| + 1/4 |1 - 0.8| + 1/4 |1 - 0.9| = 0.0375 + 0.05 + 0.025
    assert expected_calibration_error(probs, labels, bins=5) == pytest.approx(0.1125, abs=1e-6)
    rb = reliability_bins(probs, labels, bins=5)
    assert rb["count"] == [0, 0, 2, 1, 1]
    assert rb["accuracy"] == pytest.approx([0, 0, 0.5, 1, 1])
    assert rb["confidence"] == pytest.approx([0, 0, 0.575, 0.8, 0.9], abs=1e-6)


def test_ece_bin_edges_belong_to_the_lower_bin():
    # confidence exactly 0.2 lies in (0, 0.2], the first of 5 bins; 1.0 in the last
    probs = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2], [1.0, 0.0, 0.0, 0.0, 0.0]])
    rb = reliability_bins(probs, torch.tensor([0, 1]), bins=5)
    assert rb["count"] == [1, 0, 0, 0, 1]
    # bin 1: right with confidence 0.2 -> gap 0.8; bin 5: wrong with confidence 1 -> gap 1
    assert expected_calibration_error(probs, torch.tensor([0, 1]), bins=5) == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)


def test_ece_with_15_bins_against_the_papers_formula_in_numpy():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 7, generator=gen), dim=1)
    labels = torch.randint(0, 7, (500,), generator=gen)
    p = probs.numpy().astype(np.float64)
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == labels.numpy()).astype(np.float64)
    expected = 0.0
    for m in range(15):  # B_m = {i: conf_i in (m/15, (m+1)/15]}
        in_bin = (conf > m / 15) & (conf <= (m + 1) / 15)
        if in_bin.any():
            expected += in_bin.sum() / len(conf) * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-5)
    assert expected > 0.01  # a non-trivial value


def test_agreement_matrix_by_hand():
    preds = torch.tensor([[0, 1, 2, 3],
                          [0, 1, 1, 3],
                          [1, 1, 2, 0]])
    # (0, 1) agree on samples 0, 1, 3: 3/4; (0, 2) on 1, 2: 2/4; (1, 2) on 1: 1/4
    expected = torch.tensor([[1.0, 0.75, 0.5], [0.75, 1.0, 0.25], [0.5, 0.25, 1.0]])
    assert torch.equal(agreement_matrix(preds), expected)


def test_mean_and_sample_std():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and std == pytest.approx(math.sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3))
    assert mean_std([0.7]) == (0.7, 0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny finished runs: config A with seeds 0 and 1 (A0 with plots), config B (another aggregator)."""
    root = tmp_path_factory.mktemp("runs")
    base = {
        "seed": 0,
        "data": {"name": "mnist1d", "num_samples": 400, "unlabeled": 200},
        "teachers": [
            {"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 30, "eval_every": 10}},
            {"name": "mlp", "arch": "mlp", "hidden": [32], "train": {"steps": 30, "eval_every": 10}},
        ],
        "student": {"arch": "mlp", "hidden": [16]},
        "distill": {"steps": 40, "batch_size": 32, "eval_every": 10, "log_every": 5, "checkpoint_every": 40,
                    "baseline": True},
        "output": {"plots": False, "tracking": []},
    }
    made = {}
    for name, seed, aggregator, plots in [("a0", 0, "mean", True), ("a1", 1, "mean", False),
                                          ("b0", 0, "confidence", False)]:
        raw = copy.deepcopy(base)
        raw["seed"], raw["distill"]["aggregator"], raw["output"]["plots"] = seed, aggregator, plots
        run_pipeline(parse_config(raw), root / name, progress=False, log=lambda m: None)
        made[name] = root / name
    return made


def test_report_has_every_plot_and_calibration_and_agreement(runs):
    out = runs["a0"]
    report = (out / "report.md").read_text()
    for name in ("accuracy", "curves", "teacher_weights", "reliability", "agreement"):
        png = out / "plots" / f"{name}.png"
        assert f"(plots/{name}.png)" in report, name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, name
    assert "| ECE |" in report and "## Agreement" in report

    summary = json.loads((out / "summary.json").read_text())
    names = ["cnn", "mlp", "ensemble", "student (scratch)", "student"]
    assert [m["name"] for m in summary["calibration"]["models"]] == names
    assert summary["calibration"]["bins"] == 15 and summary["agreement"]["models"] == names
    records = [*summary["teachers"], summary["ensemble"], summary["scratch"], summary["student"]]
    for rec, cal in zip(records, summary["calibration"]["models"]):
        assert rec["ece"] == cal["ece"] and sum(cal["count"]) == summary["data"]["test"]

    # the wiring: recompute the student's ECE and its agreement with the cnn teacher from the saved models
    test = load_dataset("mnist1d", num_samples=400, unlabeled=200).test
    student = load_model_file(out / "student.pt")[0]
    cnn = load_model_file(out / "teachers" / "cnn.pt")[0]
    p_student, p_cnn = predict_probs([student], test), predict_probs([cnn], test)
    assert summary["student"]["ece"] == pytest.approx(expected_calibration_error(p_student, test.y), abs=1e-4)
    agree = float((p_student.argmax(1) == p_cnn.argmax(1)).float().mean())
    matrix = summary["agreement"]["matrix"]
    assert matrix[4][0] == matrix[0][4] == pytest.approx(agree, abs=1e-4)
    assert all(matrix[i][i] == 1.0 for i in range(len(names)))


def test_mtkd_report_groups_seeds_with_mean_and_std(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["report", str(runs["a0"]), str(runs["a1"]), str(runs["b0"]), "--out", str(out)]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    groups = {len(g["runs"]): g for g in comparison["groups"]}
    assert sorted(groups) == [1, 2]
    pair, single = groups[2], groups[1]
    assert pair["seeds"] == [0, 1] and single["aggregator"] == "confidence"
    accs = [json.loads((runs[k] / "summary.json").read_text())["student"]["accuracy"] for k in ("a0", "a1")]
    assert pair["student_accuracy"]["mean"] == pytest.approx((accs[0] + accs[1]) / 2, abs=1e-6)
    assert pair["student_accuracy"]["std"] == pytest.approx(abs(accs[0] - accs[1]) / math.sqrt(2), abs=1e-6)
    assert single["student_accuracy"]["std"] == 0.0
    cnn = [json.loads((runs[k] / "summary.json").read_text())["teachers"][0]["accuracy"] for k in ("a0", "a1")]
    assert pair["teachers"]["cnn"]["accuracy"]["mean"] == pytest.approx((cnn[0] + cnn[1]) / 2, abs=1e-6)
    assert pair["teachers"]["cnn"]["accuracy"]["std"] == pytest.approx(abs(cnn[0] - cnn[1]) / math.sqrt(2), abs=1e-6)
    report = (out / "report.md").read_text()
    assert "distill.aggregator=mean" in report and "distill.aggregator=confidence" in report and " ± " in report
    for name in ("accuracy", "curves"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG
        assert f"(plots/{name}.png)" in report


def test_mtkd_report_refuses_what_is_not_a_finished_run(runs, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("seed: 0\n")
    for argv, message in [([str(unfinished)], "unfinished run (no summary.json yet)"),
                          ([str(tmp_path)], "is not an mtkd run directory"),
                          ([str(tmp_path / "nowhere")], "is not a directory"),
                          ([str(runs["a0"]), "--out", str(runs["a0"])], "is one of the run directories")]:
        out = ["--out", str(tmp_path / "cmp")] if "--out" not in argv else []
        assert main(["report", *argv, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mtkd: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "cmp").exists()


def test_mtkd_report_reads_summaries_written_before_ece_existed(runs, tmp_path):
    from mtkd.report.compare import compare_runs

    old = tmp_path / "old"
    old.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (old / name).write_text((runs["a1"] / name).read_text())
    summary = json.loads((runs["a1"] / "summary.json").read_text())
    for key in ("calibration", "agreement"):
        del summary[key]
    for rec in [summary["student"], summary["ensemble"], summary["scratch"], *summary["teachers"]]:
        del rec["ece"]
    (old / "summary.json").write_text(json.dumps(summary))
    comparison = compare_runs([runs["a0"], old], tmp_path / "cmp", plots=False)
    (group,) = comparison["groups"]  # same config, seeds 0 and 1
    assert group["student_ece"]["n"] == 1 and group["student_accuracy"]["n"] == 2
