"""FFL's fusion module and AFD's discriminators on feature maps (Kim et al., ICPR 2020; Chung et
al., ICML 2020): the modules' math against hand-computed values on small tensors, the choice of
maps or vectors, spatial alignment over random sizes, and short runs through the CLI (one
interrupted and resumed) with image peers."""
import json

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mtkd.cli import main
from mtkd.errors import ConfigError
from mtkd.models import build_model, parse_model
from mtkd.models.feature_maps import align_spatial, map_layer, probe_map_shapes, smallest_size
from mtkd.recipes.afd import AfdOptions, AfdRecipe, lsgan_discriminator_loss, lsgan_generator_loss, map_discriminator
from mtkd.recipes.ffl import FflRecipe, MapFusionModule
from optional_libs import usable

EPS = 1e-5  # BatchNorm's epsilon: in eval mode with fresh statistics, BN(x) = x / sqrt(1 + eps)


def _model(spec, shape=(1, 8, 8), classes=3):
    return build_model(parse_model(spec, "test"), shape, classes)


def test_map_fusion_module_by_hand():
    """Two maps, one 2x2 and one 4x4 (average-pooled to 2x2), concatenated; depthwise 3x3 with
    known kernels (padding 1), BN, ReLU, pointwise 1x1, BN, ReLU, global average, linear."""
    a = np.array([[1.0, -2.0], [3.0, 0.5]])  # [2, 2], one channel
    b = np.arange(16, dtype=float).reshape(4, 4) / 4 - 1  # [4, 4], one channel
    fusion = MapFusionModule([1, 1], (2, 2), hidden=2, num_classes=2).eval()
    k0 = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0]])  # channel 0: 2 x[i, j] + x[i, j + 1]
    k1 = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])  # channel 1: x[i - 1, j] - x[i, j]
    pw = np.array([[1.0, 1.0], [0.5, -1.0]])  # [hidden, 2 channels]
    head_w, head_b = np.array([[1.0, -1.0], [2.0, 0.0]]), np.array([0.1, -0.2])
    with torch.no_grad():
        fusion.depthwise.weight.copy_(torch.tensor(np.stack([k0, k1])[:, None], dtype=torch.float32))
        fusion.pointwise.weight.copy_(torch.tensor(pw[:, :, None, None], dtype=torch.float32))
        fusion.classifier.weight.copy_(torch.tensor(head_w, dtype=torch.float32))
        fusion.classifier.bias.copy_(torch.tensor(head_b, dtype=torch.float32))

    b_pooled = b.reshape(2, 2, 2, 2).mean(axis=(1, 3))  # 4x4 -> 2x2 by 2x2 averages
    pad = lambda m: np.pad(m, 1)  # noqa: E731
    pa, pb = pad(a), pad(b_pooled)
    d0 = np.array([[2 * pa[i + 1, j + 1] + pa[i + 1, j + 2] for j in range(2)] for i in range(2)])
    d1 = np.array([[pb[i, j + 1] - pb[i + 1, j + 1] for j in range(2)] for i in range(2)])
    bn = lambda v: v / np.sqrt(1 + EPS)  # noqa: E731
    h = np.maximum(bn(np.stack([d0, d1])), 0)  # [2, 2, 2]
    p = np.maximum(bn(np.einsum("oc,cij->oij", pw, h)), 0)  # [hidden, 2, 2]
    expected = head_w @ p.mean(axis=(1, 2)) + head_b

    maps = [torch.tensor(a, dtype=torch.float32)[None, None], torch.tensor(b, dtype=torch.float32)[None, None]]
    got = fusion(maps)
    assert got.shape == (1, 2)
    assert np.allclose(got.detach().numpy()[0], expected, atol=1e-5)
    assert fusion.fused_map(maps).shape == (1, 2, 2, 2)


def test_map_discriminator_scores_and_lsgan_losses_by_hand():
    torch.manual_seed(0)
    d = map_discriminator(channels=2, hidden=1).eval()
    x = torch.randn(3, 2, 5, 4)
    assert d(x).shape == (3, 1)  # one score per sample, any spatial size
    with torch.no_grad():  # first conv: the centre tap of channel 0 (stride 2 picks rows / columns 0, 2, 4)
        d[0].weight.zero_()
        d[0].weight[0, 0, 1, 1] = 1.0
        d[0].bias.zero_()
        d[3].weight.fill_(2.0)
        d[3].bias.fill_(0.5)
    picked = x[:, 0, ::2, ::2].numpy() / np.sqrt(1 + EPS)  # [3, 3, 2]
    leaky = np.where(picked > 0, picked, 0.2 * picked)
    expected = 2.0 * leaky.mean(axis=(1, 2)) + 0.5
    assert np.allclose(d(x).detach().numpy()[:, 0], expected, atol=1e-5)
    with torch.no_grad():
        real, fake = d(x), d(-x)
    want_d = np.mean((1 - expected) ** 2) + np.mean(
        (2.0 * np.where(-picked > 0, -picked, -0.2 * picked).mean(axis=(1, 2)) + 0.5) ** 2)
    assert float(lsgan_discriminator_loss(real, fake)) == pytest.approx(want_d, abs=1e-5)
    assert float(lsgan_generator_loss(real)) == pytest.approx(np.mean((1 - expected) ** 2), abs=1e-5)


CNN_SMALL = {"arch": "cnn2d", "channels": [4, 6]}  # map [6, 4, 4] on 8x8 inputs
CNN_WIDE = {"arch": "cnn2d", "channels": [5]}  # map [5, 8, 8]


def test_auto_takes_maps_for_image_models_and_vectors_otherwise():
    shape = (1, 8, 8)
    ffl = FflRecipe(_model(CNN_SMALL), peers=[_model(CNN_WIDE)], num_classes=3, input_shape=shape)
    assert ffl.form == "maps" and isinstance(ffl.fusion, MapFusionModule)
    assert ffl.fusion.size == (4, 4) and ffl.fusion.depthwise.in_channels == 11  # 6 + 5 channels, smaller size
    assert ffl.fusion.pointwise.out_channels == 6  # sub-network 1's channels, as the authors' 2C -> C
    assert ffl.events[0]["form"] == "maps" and "student [6, 4, 4], peer1 [5, 8, 8]" in ffl.events[0]["note"]
    mixed = FflRecipe(_model(CNN_SMALL), peers=[_model({"arch": "mlp", "hidden": [8]})], num_classes=3,
                      input_shape=shape)
    assert mixed.form == "vectors" and mixed.events[0]["form"] == "vectors"
    forced = AfdRecipe(_model(CNN_SMALL), peers=[_model(CNN_WIDE)], input_shape=shape,
                       options=AfdOptions(features="vectors"))
    assert forced.form == "vectors"
    assert map_layer(_model({"arch": "mlp"})) is None and map_layer(_model({"arch": "cnn1d"}, (40,))) is None


@pytest.mark.skipif(not usable("timm", "torchvision"), reason="timm / torchvision not usable here (extra: vision)")
def test_library_cnns_have_maps_and_vits_do_not():
    x, shape = torch.rand(2, 3, 32, 32), (3, 32, 32)
    models = [_model({"arch": "timm:test_resnet"}, shape), _model({"arch": "timm:test_convnext"}, shape),
              _model({"arch": "torchvision:resnet18"}, shape),
              _model({"arch": "timm:test_vit", "options": {"img_size": 32, "patch_size": 8, "depth": 1}}, shape)]
    state = torch.get_rng_state()
    shapes = probe_map_shapes(models, x)
    assert torch.equal(state, torch.get_rng_state()) and all(m.training for m in models)  # probing changed nothing
    assert len(shapes[0]) == len(shapes[1]) == 3 and shapes[2] == (512, 1, 1)
    assert shapes[3] is None  # a ViT: tokens, then a pooled vector
    ffl = FflRecipe(_model({"arch": "cnn2d", "channels": [4]}, shape), peers=models[:2], num_classes=3,
                    input_shape=shape)  # a cnn2d with a timm ResNet and ConvNeXt
    assert ffl.form == "maps" and ffl.fusion.size == smallest_size([shapes[0], shapes[1], (4, 32, 32)])
    assert torch.isfinite(ffl.step(x, torch.tensor([0, 2]), None)["loss"])
    with pytest.raises(ConfigError, match="features: maps, but peer3 has no 2-D feature map"):
        AfdRecipe(models[0], peers=models[1:], input_shape=shape, options=AfdOptions(features="maps"))


@pytest.mark.skipif(not usable("timm"), reason="timm not usable here (extra: vision)")
def test_a_swin_hands_on_its_last_grid_as_a_channels_first_map():
    """timm's Swin keeps [B, H, W, C] grids up to its head (output_fmt NHWC): the captured map is
    that grid permuted to [B, C, H, W], equal element for element."""
    from mtkd.models.feature_maps import FeatureMap

    shape = (3, 16, 16)
    swin = _model({"arch": "timm:swin_tiny_patch4_window7_224",
                   "options": {"img_size": 16, "patch_size": 2, "window_size": 4, "embed_dim": 8, "depths": [1, 1],
                               "num_heads": [1, 2]}}, shape)
    x = torch.rand(2, *shape)
    capture = FeatureMap(swin)
    swin.eval()
    with torch.no_grad():
        swin(x)
        grid = swin.forward_features(x)  # [B, H, W, C]
    assert grid.shape == (2, 4, 4, 16) and torch.equal(capture.value, grid.permute(0, 3, 1, 2))
    swin.train()
    afd = AfdRecipe(swin, peers=[_model({"arch": "cnn2d", "channels": [4]}, shape)], input_shape=shape)
    assert afd.form == "maps"  # a transfer layer 16 -> 4 channels, grids pooled to 4x4
    assert torch.isfinite(afd.step(x, torch.tensor([0, 2]), None)["loss"])


def test_afd_transfer_layer_and_alignment_on_maps():
    """Peer 1's map [6, 4, 4] meets peer 2's [5, 8, 8]: D_1 judges in [5, 4, 4] (peer 1 through a
    1x1 conv, peer 2 pooled); D_2 judges in [6, 4, 4]."""
    torch.manual_seed(0)
    recipe = AfdRecipe(_model(CNN_SMALL), peers=[_model(CNN_WIDE)], input_shape=(1, 8, 8))
    assert recipe.form == "maps" and recipe.sizes == [(4, 4), (4, 4)]
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 3, (4,))
    recipe.student(x), recipe.peers[0](x)
    feats = [f.value for f in recipe.features]
    (real0, fake0), (real1, fake1) = recipe.judged(0, feats), recipe.judged(1, feats)
    assert real0.shape == fake0.shape == (4, 5, 4, 4) and real1.shape == fake1.shape == (4, 6, 4, 4)
    assert torch.allclose(real0, torch.nn.functional.avg_pool2d(feats[1], 2))  # peer 2 pooled 8x8 -> 4x4
    assert isinstance(recipe.transfers[0][0], torch.nn.Conv2d)  # channels differ: 6 -> 5
    losses = recipe.step(x, y, None)
    losses["loss"].backward()
    assert recipe.transfers[0][0].weight.grad is not None  # trained with peer 1 by the adversarial term
    assert all(p.grad is None for p in recipe.discriminators.parameters())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4))
def test_spatial_alignment_pools_every_map_to_the_smallest_size(shapes):
    maps = [torch.rand(2, c, h, w) for c, h, w in shapes]
    size = smallest_size(shapes)
    aligned = align_spatial(maps, size)
    for m, a in zip(maps, aligned):
        assert a.shape == (2, m.shape[1], *size)  # channels kept, size the smallest
        if tuple(m.shape[-2:]) == size:
            assert a is m  # nothing to pool
        if size == (1, 1):
            assert torch.allclose(a[..., 0, 0], m.mean(dim=(2, 3)), atol=1e-6)
        elif m.shape[-2] % size[0] == 0 and m.shape[-1] % size[1] == 0:  # whole blocks: plain block averages
            kh, kw = m.shape[-2] // size[0], m.shape[-1] // size[1]
            assert torch.allclose(a, torch.nn.functional.avg_pool2d(m, (kh, kw)), atol=1e-6)


# ---------------------------------------------------------------- through the CLI

pytest_sklearn = pytest.mark.skipif(not usable("sklearn"), reason="scikit-learn not usable here (data set digits)")


def _config(tmp_path, recipe, steps, **options):
    raw = {"seed": 0, "data": {"name": "digits"}, "student": CNN_SMALL,
           "distill": {"recipe": {"name": recipe, "peers": [{"name": "wide", **CNN_WIDE}], **options},
                       "steps": steps, "batch_size": 32, "eval_every": 10, "log_every": 5, "checkpoint_every": 10,
                       "baseline": False},
           "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest_sklearn
@pytest.mark.parametrize("recipe", ["ffl", "afd"])
def test_map_form_runs_through_the_cli_and_says_so(tmp_path, capsys, recipe):
    out = tmp_path / "run"
    assert main(["run", str(_config(tmp_path, recipe, 12, features="maps")), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().err
    assert f"recipe '{recipe}': working on feature maps (student [6, 4, 4], wide [5, 8, 8])" in printed
    summary = json.loads((out / "summary.json").read_text())
    roles = [p["role"] for p in summary["peers"]]
    assert any("on feature maps" in r for r in roles), roles
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "features" and e["form"] == "maps" for e in events)
    last = [r for r in events if r.get("stage") == "distill" and "loss" in r][-1]
    assert np.isfinite(last["loss"])


@pytest_sklearn
@pytest.mark.parametrize("recipe", ["ffl", "afd"])
def test_interrupted_map_form_run_resumes_to_the_same_weights(tmp_path, recipe):
    """Ctrl-C at step 15 (checkpoint at 10): the fusion module / discriminators, transfer layers,
    BatchNorm statistics and the discriminators' Adam state come back, so every model ends bit for
    bit as in an unbroken run."""
    from fault_injection import interrupted_at
    from mtkd.recipes import RECIPES

    cfg = _config(tmp_path, recipe, 20)
    killed, unbroken = tmp_path / "killed", tmp_path / "unbroken"
    with interrupted_at(15, RECIPES[recipe]):
        assert main(["run", str(cfg), "--out", str(killed), "--no-progress"]) == 130
    assert main(["run", str(cfg), "--out", str(killed), "--no-progress"]) == 0
    assert main(["run", str(cfg), "--out", str(unbroken), "--no-progress"]) == 0
    for name in ["student.pt", "peers/wide.pt"]:
        a, b = torch.load(killed / name)["state_dict"], torch.load(unbroken / name)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows = lambda run: json.loads((run / "summary.json").read_text())["peers"]  # noqa: E731
    assert [p["accuracy"] for p in rows(killed)] == [p["accuracy"] for p in rows(unbroken)]  # ffl: the fused model
    assert "on feature maps" in rows(killed)[-1]["role"]
