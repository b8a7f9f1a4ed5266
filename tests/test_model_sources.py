"""Models from timm, torchvision and Hugging Face transformers (tiny, randomly initialised,
nothing downloaded): cache fingerprints, config specs, weights files, input conversion, errors."""
import json

import numpy as np
import pytest
import torch
import yaml

from mtkd.cache.store import teacher_fingerprint
from mtkd.cli import main


def _vision() -> bool:
    try:  # a torchvision built for another torch fails with RuntimeError, not ImportError
        import timm  # noqa: F401
        import torchvision  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


pytestmark = pytest.mark.skipif(not _vision(), reason="timm/torchvision not usable here (extra: vision)")

# (source, name, factory options): BatchNorm (0-d num_batches_tracked), LayerNorm, attention
FAMILIES = [
    ("timm", "resnet10t", {}),
    ("timm", "test_efficientnet", {}),
    ("timm", "test_convnext", {}),
    ("timm", "test_vit", {"img_size": 16}),
    ("torchvision", "squeezenet1_1", {}),
    ("torchvision", "mobilenet_v3_small", {}),
]


def _create(source, name, options, num_classes=3):
    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, **options)
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)


@pytest.mark.parametrize("source,name,options", FAMILIES, ids=[f"{s}:{n}" for s, n, _ in FAMILIES])
def test_fingerprint_hashes_every_tensor_and_buffer_including_0d(source, name, options):
    torch.manual_seed(0)
    model = _create(source, name, options)
    zero_d = [k for k, v in model.state_dict().items() if v.dim() == 0]
    fp = teacher_fingerprint(model)
    assert fp == teacher_fingerprint(model)
    state = model.state_dict()
    if zero_d:  # changing only a 0-d buffer changes the fingerprint
        state[zero_d[0]].add_(1)
    else:
        next(iter(state.values())).view(-1)[0].add_(1)
    assert teacher_fingerprint(model) != fp


# ---------------------------------------------------------------- an image folder and a config

def _image_folder(root, classes=3, per_class=12, size=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[:, :, c] += 150  # the class is the dominant colour channel
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def _save_hf_vit(path, num_labels=3):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=num_labels)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(cfg).save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(path)


@pytest.fixture
def vision_config(tmp_path):
    from safetensors.torch import save_file

    data = _image_folder(tmp_path / "images")
    torch.manual_seed(0)
    save_file(_create("timm", "test_efficientnet", {}).state_dict(), tmp_path / "effnet.safetensors")
    torch.save(_create("torchvision", "squeezenet1_1", {}).state_dict(), tmp_path / "squeeze.pt")
    _save_hf_vit(tmp_path / "hf_vit")
    return {
        "seed": 0,
        "data": {"name": "images", "root": str(data), "mode": "RGB", "val_fraction": 0.2},
        "teachers": [
            {"name": "effnet", "arch": "timm:test_efficientnet", "weights": str(tmp_path / "effnet.safetensors")},
            {"name": "squeeze", "arch": "torchvision:squeezenet1_1", "weights": str(tmp_path / "squeeze.pt"),
             "input": {"size": [32, 32]}},
            {"name": "vit", "arch": f"hf:{tmp_path / 'hf_vit'}"},
        ],
        "student": {"arch": "timm:test_vit", "options": {"img_size": 16}},
        "distill": {"steps": 4, "batch_size": 8, "eval_every": 2, "log_every": 2, "checkpoint_every": 2},
        "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []},
    }


def _write(tmp_path, raw):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_timm_torchvision_hf_teachers_and_timm_student_run_end_to_end(tmp_path, vision_config, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, vision_config)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [t["name"] for t in summary["teachers"]] == ["effnet", "squeeze", "vit"]
    assert not (out / "teachers" / "effnet.pt").exists()  # given weights: used, never trained
    from mtkd.models.files import load_model_file

    student, meta = load_model_file(out / "student.pt")  # rebuilt from the file alone
    assert meta["arch"]["arch"] == "timm:test_vit"
    assert student(torch.rand(2, 3, 16, 16)).shape == (2, 3)


def test_teacher_sees_its_own_resolution_and_normalisation(tmp_path):
    from mtkd.config import _model
    from mtkd.models import build_model
    from mtkd.models.sources import InputAdapter

    cfg = _model({"arch": "torchvision:squeezenet1_1", "input": {"size": [32, 32], "mean": [0.5, 0.5, 0.5],
                                                                  "std": [0.25, 0.25, 0.25]}}, "teachers[0]")
    model = build_model(cfg, (3, 16, 16), 3).eval()
    assert isinstance(model, InputAdapter)
    x = torch.rand(2, 3, 16, 16)
    expected = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False,
                                               antialias=False)  # upsampling: no antialiasing (exportable to ONNX)
    with torch.no_grad():
        assert torch.equal(model(x), model.model((expected - 0.5) / 0.25))


def test_student_from_a_backbone_gets_a_fresh_head_teacher_refuses(tmp_path):
    import timm
    from safetensors.torch import save_file

    from mtkd.config import _model
    from mtkd.errors import ConfigError
    from mtkd.models import build_model

    torch.manual_seed(0)
    backbone = timm.create_model("resnet10t", num_classes=7)
    save_file(backbone.state_dict(), tmp_path / "r.safetensors")
    spec = {"arch": "timm:resnet10t", "weights": str(tmp_path / "r.safetensors")}
    student = build_model(_model(dict(spec), "student"), (3, 16, 16), 3)
    body = {k: v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    inner = student.model.state_dict()  # wrapped: the weights bring ImageNet normalisation
    assert all(torch.equal(inner[k], v) for k, v in body.items())
    assert inner["fc.weight"].shape == (3, backbone.fc.in_features)
    with pytest.raises(ConfigError, match="classifier .* a teacher must predict the data's classes"):
        build_model(_model(dict(spec), "teachers[0]"), (3, 16, 16), 3)


@pytest.mark.parametrize("change,message", [
    ({"arch": "timm:no_such_net"}, "timm has no model 'no_such_net'"),
    ({"arch": "torchvision:no_such_net"}, "torchvision has no model 'no_such_net'"),
    ({"arch": "keras:resnet"}, "unknown model source 'keras'"),
    ({"arch": "timm:resnet10t", "pretrained": True}, "mtkd downloads nothing"),
    ({"arch": "timm:vit_tiny_patch16_224"}, "cannot take inputs \\[3, 16, 16\\]"),  # a ViT for 224 px, no input.size
    ({"arch": "timm:resnet10t", "weights": "WRONG"}, "does not fit the model"),
    ({"arch": "timm:resnet10t", "input": {"size": [0, 3]}}, "sizes must be positive"),
])
def test_bad_model_specs_exit_2_one_line_nothing_written(tmp_path, vision_config, capsys, change, message):
    import timm
    from safetensors.torch import save_file

    if change.get("weights") == "WRONG":  # weights of another architecture
        save_file(timm.create_model("resnet18", num_classes=3).state_dict(), tmp_path / "wrong.safetensors")
        change = {**change, "weights": str(tmp_path / "wrong.safetensors")}
    vision_config["teachers"][0] = {"name": "bad", **change}
    out = tmp_path / "bad_run"
    assert main(["run", str(_write(tmp_path, vision_config)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "teachers[0]" in err
    assert __import__("re").search(message, err), err
    assert not out.exists()


def test_list_shows_sources_and_library_models(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "timm:" in text and "torchvision:" in text and "hf:" in text
    assert main(["list", "--models", "timm"]) == 0
    assert "resnet10t" in capsys.readouterr().out.split()
    assert main(["list", "--models", "torchvision"]) == 0
    assert "squeezenet1_1" in capsys.readouterr().out.split()
