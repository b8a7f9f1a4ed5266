"""Export: the exported student's outputs match PyTorch's (ONNX through onnxruntime, TorchScript
through torch.jit.load), a mismatch writes nothing, missing packages and bad run dirs are clear errors."""
import json
import sys

import numpy as np
import pytest
import torch

from mtkd import export as export_mod
from mtkd.cli import main
from mtkd.config import parse_config
from mtkd.errors import MtkdError
from mtkd.export import export_model
from mtkd.models import MODELS, build_model
from mtkd.models.files import load_model_file
from mtkd.pipeline import run_pipeline

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    raw = {"seed": 0, "data": {"name": "mnist1d", "num_samples": 300},
           "teachers": [{"name": "cnn", "arch": "cnn1d", "channels": 8, "train": {"steps": 20}},
                        {"name": "gru", "arch": "gru", "hidden": 8, "train": {"steps": 20}}],
           "student": {"arch": "mlp", "hidden": [16]},
           "distill": {"steps": 20, "batch_size": 32}, "output": {"plots": False, "tracking": []}}
    run_pipeline(parse_config(raw), out, progress=False, log=lambda m: None)
    return out


def _exported_logits(path, fmt, x):
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
    return torch.jit.load(str(path))(x).detach()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_student_matches_pytorch(run_dir, tmp_path, capsys, fmt):
    path = tmp_path / f"student.{fmt}"
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "check: max" in printed and "ensemble of 2 teachers" in printed
    student = load_model_file(run_dir / "student.pt")[0].eval()
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 7, 64):  # the batch axis is dynamic
        x = torch.randn(batch, 40, generator=gen)
        with torch.no_grad():
            expected = student(x)
        got = _exported_logits(path, fmt, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5)
    result = json.loads((tmp_path / f"student.{fmt}.json").read_text())
    assert result["max_abs_diff"] <= 1e-4 and result["checked_inputs"] == 60  # mnist1d 300 -> 60 test samples
    timing = result["ms_per_1000"]
    assert timing["exported"] > 0 and timing["pytorch_student"] > 0 and timing["ensemble"] > 0
    assert timing["teachers"] == 2 and timing["threads"] == 1


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_built_in_model_exports(tmp_path, arch, fmt):
    torch.manual_seed(0)
    token_ids = lambda *size: torch.randint(0, 10, size).float()  # noqa: E731 - a language model's inputs
    # the first input the model accepts: feature vectors, token ids, images
    for shape, make in [((40,), torch.randn), ((40,), token_ids), ((1, 8, 8), torch.randn), ((3, 32, 32), torch.randn)]:
        try:
            model = build_model(arch, shape, 10).eval()
            x = make(30, *shape)
            model(x[:2])
            break
        except Exception:
            continue
    else:
        pytest.fail(f"{arch}: no test input shape fits; add one here")
    result = export_model(model, x, tmp_path / "m", fmt)
    assert result["max_abs_diff"] <= 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(_exported_logits(tmp_path / "m", fmt, x[:5]).numpy(), model(x[:5]).numpy(),
                                   atol=1e-4, rtol=1e-4)


def test_an_export_that_does_not_match_is_refused_and_not_written(tmp_path, monkeypatch):
    model = build_model("mlp", (40,), 10).eval()
    real = export_mod.load_exported
    monkeypatch.setattr(export_mod, "load_exported", lambda data, fmt: (lambda x: real(data, fmt)(x) + 0.01))
    with pytest.raises(MtkdError, match="does not reproduce the model.*nothing was written"):
        export_model(model, torch.randn(20, 40), tmp_path / "bad.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now fails
    with pytest.raises(MtkdError, match=r"pip install 'mtkd\[onnx\]'"):
        export_model(build_model("mlp", (40,), 10), torch.randn(4, 40), tmp_path / "m.onnx", "onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_of_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "is not a finished mtkd run directory" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path), "--format", "tflite"])
    assert exc.value.code == 2
