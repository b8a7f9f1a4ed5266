"""Feature-level methods on tiny random timm / torchvision models: FitNet hints on conv feature
maps (1x1 conv + spatial alignment) and on ViT token sequences (linear map + token-count
alignment), layer names as the library names them, and TAS with stages found in real
architectures (CNN -> ViT and ViT -> CNN)."""
import pytest
import torch
import yaml

from mtkd.cli import main
from optional_libs import usable


pytestmark = pytest.mark.skipif(not usable("timm", "torchvision"),
                                reason="timm / torchvision not usable here (extra: vision)")

SHAPE = (1, 16, 16)
RESNET = {"arch": "timm:test_resnet"}
VIT = {"arch": "timm:test_vit", "options": {"img_size": 16, "patch_size": 4, "depth": 2}}
# a tiny Swin: its stages hand on grids of tokens [B, H, W, C] (timm's output_fmt NHWC)
SWIN = {"arch": "timm:swin_tiny_patch4_window7_224",
        "options": {"img_size": 16, "patch_size": 2, "window_size": 4, "embed_dim": 8, "depths": [1, 1],
                    "num_heads": [1, 2]}}


def _model(spec, input_shape=SHAPE, classes=10):
    from mtkd.models.sources import build, parse

    torch.manual_seed(0)
    return build(parse(dict(spec), "model", "student"), input_shape, classes)


def test_projector_on_conv_maps_is_a_1x1_conv_then_pooling_or_interpolation():
    from mtkd.models.projectors import Projector

    down = Projector((2, 4, 4), "channels", (3, 2, 2), "channels")
    assert isinstance(down.local, torch.nn.Conv2d) and down.local.kernel_size == (1, 1) and down.globl is None
    with torch.no_grad():
        down.local.weight.zero_()
        down.local.weight[:, 0] = 1.0  # every output channel = input channel 0
        down.local.bias.zero_()
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # 2x2 means of channel 0, by hand
    assert torch.equal(down(x), expected.expand(1, 3, 2, 2))
    up = Projector((2, 2, 2), "channels", (2, 4, 4), "channels")
    assert up(torch.randn(3, 2, 2, 2)).shape == (3, 2, 4, 4)


def test_projector_on_token_sequences_is_linear_then_token_count_alignment():
    from mtkd.models.projectors import Projector

    proj = Projector((4, 2), "tokens", (2, 3), "tokens")  # [T=4, D=2] -> [T=2, D=3]
    with torch.no_grad():
        proj.local.weight.zero_()
        proj.local.weight[:, 0, 0] = 1.0  # each output dimension = input dimension 0
        proj.local.bias.zero_()
    x = torch.tensor([[[1.0, 9.0], [3.0, 9.0], [5.0, 9.0], [7.0, 9.0]]])
    assert torch.equal(proj(x), torch.tensor([[[2.0] * 3, [6.0] * 3]]))  # tokens averaged in pairs
    assert proj.globl is None


def test_projector_reads_and_writes_channels_last_grids_as_maps():
    from mtkd.models.projectors import Projector

    proj = Projector((4, 4, 2), "channels_last", (3, 2, 2), "channels")  # [H, W, C] -> [C', H', W']
    assert isinstance(proj.local, torch.nn.Conv2d) and proj.globl is None
    with torch.no_grad():
        proj.local.weight.zero_()
        proj.local.weight[:, 1] = 1.0  # every output channel = input channel 1 (the last axis)
        proj.local.bias.zero_()
    x = torch.zeros(1, 4, 4, 2)
    x[0, :, :, 1] = torch.arange(16.0).reshape(4, 4)
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]])  # 2x2 means of channel 1, by hand
    assert torch.equal(proj(x), expected.expand(1, 3, 2, 2))
    back = Projector((3, 2, 2), "channels", (4, 4, 5), "channels_last")
    assert back(torch.randn(2, 3, 2, 2)).shape == (2, 4, 4, 5)


def test_swin_stages_are_channels_last_and_its_convolution_is_not():
    from mtkd.models.layers import LayerFeatures

    swin = _model(SWIN)
    feats = LayerFeatures(swin, ["layers.1", "patch_embed.proj"])
    swin(torch.rand(2, *SHAPE))
    assert tuple(feats.values["layers.1"].shape) == (2, 4, 4, 16)
    assert feats.layout("layers.1") == "channels_last" and feats.layout("patch_embed.proj") == "channels"
    from mtkd.models.library_blocks import library_blocks

    assert [stage.layout for stage in library_blocks(swin).body] == ["channels_last", "channels_last"]  # TAS's stages


@pytest.mark.parametrize("student, s_layer, teacher, t_layer, t_shape", [
    (SWIN, "layers.1", RESNET, "layer2", (48, 2, 2)),                                # Swin grid -> conv map
    (RESNET, "layer1", SWIN, "layers.0", (8, 8, 8)),                                # conv map -> Swin grid
    (RESNET, "layer2", {"arch": "torchvision:resnet18"}, "layer3", (256, 1, 1)),   # conv map -> smaller map
    (VIT, "blocks.0", dict(VIT, options={"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 32}),
     "blocks.1", (5, 32)),                                                           # 17 tokens -> 5 tokens
])
def test_fitnet_hints_on_library_layers(student, s_layer, teacher, t_layer, t_shape):
    from mtkd.aggregation import AggregatorContext, build_aggregator
    from mtkd.recipes.features import FeaturesOptions, FeaturesRecipe
    from mtkd.teachers import FrozenTeacher

    s, t = _model(student), _model(teacher)
    teachers = [FrozenTeacher(t, "t")]
    opts = FeaturesOptions(hints=[{"student": s_layer, "teacher": t_layer}])
    x, y = torch.rand(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    recipe = FeaturesRecipe(s, teachers, build_aggregator("mean", AggregatorContext(teachers, 10), None),
                            options=opts, example=x)
    assert tuple(recipe.teacher_feats[0].values[t_layer].shape[1:]) == t_shape
    if len(t_shape) == 3:  # grids on both sides (NCHW or NHWC): FitNet's 1x1 conv regressor, positions pooled
        assert all(isinstance(p.local, torch.nn.Conv2d) and p.globl is None for p in recipe.projectors.values())
    losses = recipe.step(x, y, None)
    assert torch.isfinite(losses["hint"]) and float(losses["hint"].detach()) > 0
    losses["loss"].backward()
    assert all(p.grad is not None for p in recipe.projectors.parameters())


def _write(tmp_path, raw):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _config(tmp_path, student, teacher, recipe, **distill):
    return {"seed": 0, "data": {"name": "digits", "size": [16, 16]},
            "teachers": [{"name": "t", "train": {"steps": 2, "batch_size": 16}, **teacher}],
            "student": student,
            "distill": {"recipe": recipe, "steps": 2, "batch_size": 16, "eval_every": 2, "baseline": False, **distill},
            "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []}}


def test_wrong_layer_name_lists_the_library_layers_before_writing(tmp_path, capsys):
    raw = _config(tmp_path, RESNET, VIT, "features", hints=[{"student": "layer9", "teacher": "blocks.1"}])
    assert main(["run", str(_write(tmp_path, raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no layer 'layer9'" in err[0] and "layer1, layer1.0" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("student, teacher", [(VIT, RESNET), (RESNET, VIT), (SWIN, RESNET), (RESNET, SWIN)],
                         ids=["cnn_to_vit", "vit_to_cnn", "cnn_to_swin", "swin_to_cnn"])
def test_tas_on_library_pairs(student, teacher):
    """The hybrid assistant from real stages: the CNN's first stages -> L2G -> the ViT's later blocks."""
    from mtkd.aggregation import AggregatorContext, build_aggregator
    from mtkd.models.blocks import model_blocks, run_blocks
    from mtkd.recipes import TasRecipe
    from mtkd.teachers import FrozenTeacher

    s, t = _model(student), _model(teacher)
    teachers = [FrozenTeacher(t, "t")]
    x, y = torch.rand(4, *SHAPE), torch.tensor([0, 1, 2, 3])
    recipe = TasRecipe(s, teachers, build_aggregator("mean", AggregatorContext(teachers, 10), None), example=x)
    assert recipe.teacher_first == (teacher is RESNET)  # the convolutional model starts the assistant
    blocks = model_blocks(s)
    s.eval()
    with torch.no_grad():
        assert torch.allclose(blocks.head(run_blocks(blocks.body, x)), s(x), atol=1e-5)
    s.train()
    before = {k: v.clone() for k, v in t.state_dict().items()}
    opt = torch.optim.SGD([p for p in recipe.parameters() if p.requires_grad], lr=0.05)
    for _ in range(2):
        losses = recipe.step(x, y, None)
        assert all(torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in t.state_dict().items())  # the shared teacher stays frozen
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in recipe.bridge.parameters())


def test_tas_run_end_to_end_with_a_timm_cnn_teacher_and_a_vit_student(tmp_path):
    raw = _config(tmp_path, VIT, RESNET, "tas")
    assert main(["run", str(_write(tmp_path, raw)), "--no-progress"]) == 0
    assert (tmp_path / "run" / "student.pt").exists()
