import pytest
import torch

from mtkd import config as config_mod
from mtkd.data import BatchLoader, load_dataset
from mtkd.errors import ConfigError
from mtkd.models import build_model
from mtkd.pipeline import prepare
from mtkd.precision import autocast, grad_scaler
from mtkd.recipes import ScratchRecipe
from mtkd.trainer import Trainer


def test_fp16_needs_cuda_and_bf16_runs_on_cpu(tiny_raw_config):
    if not torch.cuda.is_available():
        raw = {**tiny_raw_config, "distill": {**tiny_raw_config["distill"], "amp": "fp16", "device": "cpu"}}
        with pytest.raises(ConfigError, match="fp16"):
            prepare(config_mod.parse_config(raw))
        with pytest.raises(ConfigError, match="fp16"):
            autocast(torch.device("cpu"), "fp16")
    assert grad_scaler(torch.device("cpu"), "bf16") is None
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.float32


def test_trainer_with_bf16_autocast_learns(tmp_path):
    data = load_dataset("mnist1d", num_samples=300, seed=0)
    cfg = config_mod.TrainConfig(steps=40, batch_size=32, eval_every=100, lr=1e-2)
    torch.manual_seed(0)
    model = build_model(config_mod._model({"arch": "mlp", "hidden": [32]}, "s"), data.input_shape, 10)
    first = ScratchRecipe(model).step(data.train.x[:64], data.train.y[:64], None)["loss"].item()
    Trainer(ScratchRecipe(model), BatchLoader(data.train, 32), cfg, progress=False, amp="bf16").fit()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    last = ScratchRecipe(model).step(data.train.x[:64], data.train.y[:64], None)["loss"].item()
    assert last < first  # parameters stay float32; the autocast steps still reduce the loss


def test_python_api_passes_distill_amp_to_the_trainer(monkeypatch):
    """mtkd.distill(..., amp="bf16") autocasts its steps (it used to be validated, then dropped)."""
    import mtkd
    import mtkd.trainer as trainer_mod

    seen = []
    real = trainer_mod.autocast

    def spy(device, amp):
        seen.append(amp)
        return real(device, amp)

    monkeypatch.setattr(trainer_mod, "autocast", spy)
    data = load_dataset("mnist1d", num_samples=300, seed=0)
    torch.manual_seed(0)
    shape = data.input_shape
    student = build_model(config_mod._model({"arch": "mlp", "hidden": [16]}, "s"), shape, 10)
    teacher = build_model(config_mod._model({"arch": "mlp", "hidden": [16]}, "t"), shape, 10)
    mtkd.distill(student, [teacher], BatchLoader(data.train, 32), steps=3, amp="bf16", progress=False)
    assert seen == ["bf16"] * 3
