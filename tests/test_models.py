import pytest
import torch

from mtkd.config import ConfigError, _model
from mtkd.models import MODELS, build_model, count_params

SHAPES = {"cnn2d": (1, 8, 8)}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_every_model_maps_a_batch_to_logits(arch):
    shape = SHAPES.get(arch, (40,))
    model = build_model(MODELS[arch].config(), shape, 10)
    if arch == "gpt":  # a causal language model: token ids [B, T] -> next-token logits [B, T, V]
        out = model(torch.randint(0, 10, (3, *shape)))
        assert out.shape == (3, *shape, 10)
    else:
        out = model(torch.randn(3, *shape))
        assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("raw, params", [
    ({"arch": "cnn1d"}, 5210),  # the MNIST-1D reference CNN
    ({"arch": "cnn1d", "channels": 8}, 858),
    ({"arch": "mlp", "hidden": [100, 100]}, 15210),
    ({"arch": "linear"}, 410),
])
def test_parameter_counts_match_the_reference_models(raw, params):
    assert count_params(build_model(_model(raw, "student"), (40,), 10)) == params


def test_sequence_models_accept_channels():
    for arch in ("cnn1d", "gru", "transformer"):
        assert build_model(MODELS[arch].config(), (3, 40), 5)(torch.randn(2, 3, 40)).shape == (2, 5)


def test_image_input_to_a_1d_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="cnn1d.*1-D inputs"):
        build_model(MODELS["cnn1d"].config(), (1, 8, 8), 10)


def test_num_classes_in_config_overrides_the_data():
    model = build_model(_model({"arch": "mlp", "num_classes": 3}, "student"), (40,), 10)
    assert model(torch.randn(2, 40)).shape == (2, 3)


def test_gpt_is_causal():
    """A change at position t changes no logits before t."""
    torch.manual_seed(0)
    model = build_model("gpt", (12,), 20, layers=2, dim=16, heads=2).eval()
    ids = torch.randint(0, 20, (1, 12))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % 20
    a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6) and not torch.allclose(a[:, 7:], b[:, 7:])
