"""Images decoded lazily in DataLoader workers (data.workers): the same batches whatever the number
of workers (and the same as decoding everything at load), and an augmented image-folder run that is
SIGKILLed in training resumes to the weights of an unbroken run."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from mtkd.cli import main
from optional_libs import usable
from mtkd.data import BatchLoader, load_dataset


pytestmark = pytest.mark.skipif(not usable("torchvision"), reason="torchvision not usable here (extra: vision)")
Image = pytest.importorskip("PIL.Image")

AUGMENT = [{"RandomResizedCrop": {"size": [8, 8], "scale": [0.5, 1.0], "antialias": True}},
           {"RandomHorizontalFlip": {}}]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """train/{a,b}: 6 random 8x8 RGB PNGs each; test/{a,b}: 2 each. Class b is brighter."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c, (label, low) in enumerate((("a", 0), ("b", 100))):
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(low, low + 156, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / label / f"{i}.png")
    return root


def _batches(loader: BatchLoader, n: int) -> list:
    out = []
    while len(out) < n:  # across epochs, as the trainer reads them
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for x, y in zip(a, b) for p, q in zip(x, y))


def test_workers_give_the_batches_of_one_process_and_of_an_eager_load(image_root):
    from mtkd.data.lazy_images import LazyImages

    eager = load_dataset("images", root=image_root, mode="RGB", augment=AUGMENT)
    lazy = load_dataset("images", root=image_root, mode="RGB", augment=AUGMENT, workers=2)
    assert isinstance(lazy.train.x, LazyImages) and lazy.workers == 2
    assert lazy.input_shape == eager.input_shape == (3, 8, 8)
    assert torch.equal(lazy.test.x[:], eager.test.x) and torch.equal(lazy.train.index, eager.train.index)

    def loader(data, workers):
        return BatchLoader(data.train, 4, seed=3, augment=data.augment, workers=workers)

    n = 7  # 11 training images (one is validation), 3 batches an epoch: past two epoch ends
    reference = _batches(loader(eager, 0), n)
    assert _same(_batches(loader(lazy, 0), n), reference)
    assert _same(_batches(loader(lazy, 2), n), reference)
    assert not torch.equal(reference[0][0], eager.train.x[reference[0][2]])  # the batches are augmented
    resumed = loader(lazy, 2)
    resumed.load_state_dict({"epoch": 1, "batch": 1})  # as a checkpoint taken after batch 4 restores it
    assert _same(_batches(resumed, n - 4), reference[4:])


def test_hf_disk_image_column_decoded_lazily(tmp_path, image_root):
    """An image column of a Hugging Face data set on disk: lazily decoded rows equal the eager load's."""
    pa = pytest.importorskip("pyarrow")
    for split in ("train", "test"):
        files = sorted((image_root / split).glob("*/*.png"))
        table = pa.table({"img": [{"bytes": f.read_bytes(), "path": None} for f in files],
                          "label": [0 if f.parent.name == "a" else 1 for f in files]})
        folder = tmp_path / "hf" / split
        folder.mkdir(parents=True)
        with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
            writer.write_table(table)
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
        (folder / "dataset_info.json").write_text(json.dumps(
            {"features": {"label": {"_type": "ClassLabel", "names": ["a", "b"]}, "img": {"_type": "Image"}}}))
    options = {"path": tmp_path / "hf", "image": "img", "augment": AUGMENT}
    eager = load_dataset("hf_disk", **options)
    lazy = load_dataset("hf_disk", workers=1, **options)
    assert torch.equal(lazy.train.x[:], eager.train.x) and torch.equal(lazy.test.x[:], eager.test.x)
    assert _same(_batches(BatchLoader(lazy.train, 4, seed=0, augment=lazy.augment, workers=1), 4),
                 _batches(BatchLoader(eager.train, 4, seed=0, augment=eager.augment), 4))


def test_unreadable_image_is_one_line_at_load(tmp_path, image_root, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(image_root, root)
    (root / "train" / "a" / "0.png").write_bytes(b"not a png")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "images", "root": str(root), "workers": 2},
                                   "student": {"arch": "mlp"}, "teachers": [], "distill": {"recipe": "scratch"},
                                   "output": {"dir": str(tmp_path / "run")}}))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0] and "0.png" in err[0]
    assert not (tmp_path / "run").exists()


def _run_config(tmp_path, image_root, workers: int) -> dict:
    return {
        "seed": 0,
        "data": {"name": "images", "root": str(image_root), "mode": "RGB", "augment": AUGMENT, "workers": workers},
        "teachers": [{"name": "mlp", "arch": "mlp", "hidden": [16], "train": {"steps": 10, "batch_size": 4}}],
        "student": {"arch": "mlp", "hidden": [8]},
        "distill": {"steps": 400, "batch_size": 4, "eval_every": 400, "log_every": 50, "checkpoint_every": 5,
                    "baseline": False},
        "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []},
    }


def test_sigkilled_augmented_image_run_with_workers_resumes_bit_exact(tmp_path, image_root):
    """Kill a real `mtkd run` (2 loader workers) mid-distillation, run it again, compare with an
    unbroken run that decodes in its own process (workers: 0)."""
    killed_cfg = tmp_path / "killed.yaml"
    killed_cfg.write_text(yaml.safe_dump(_run_config(tmp_path, image_root, workers=2)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mtkd", "run", str(killed_cfg), "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = killed / "checkpoints" / "student.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its loader workers
    proc.wait()
    assert ckpt.exists(), "the run finished or failed before it could be killed"
    assert not (killed / "summary.json").exists()
    assert torch.load(ckpt, weights_only=False)["step"] < 400

    assert subprocess.run(cmd + ["--out", str(killed)], env=env, capture_output=True).returncode == 0
    unbroken_cfg = tmp_path / "unbroken.yaml"
    unbroken_cfg.write_text(yaml.safe_dump(_run_config(tmp_path, image_root, workers=0)))
    unbroken = tmp_path / "unbroken"
    assert main(["run", str(unbroken_cfg), "--out", str(unbroken), "--no-progress"]) == 0
    a = torch.load(killed / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(unbroken / "student.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_of_a_timm_student_with_converted_input_matches_the_run(tmp_path, image_root, capsys):
    """A timm ViT student that sees its images resized (8x8 -> 32x32) and normalised inside the
    model: the file `mtkd run` saves, loaded alone, and its ONNX export give the run's test accuracy."""
    onnxruntime = pytest.importorskip("onnxruntime")

    from mtkd.student import load_student

    raw = {"seed": 0,
           "data": {"name": "images", "root": str(image_root), "mode": "RGB", "workers": 2},
           "teachers": [{"name": "mlp", "arch": "mlp", "hidden": [16], "train": {"steps": 4, "batch_size": 4}}],
           "student": {"arch": "timm:test_vit", "options": {"img_size": 32, "patch_size": 8, "depth": 1},
                       "input": {"size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
           "distill": {"steps": 6, "batch_size": 4, "eval_every": 3, "baseline": False},
           "output": {"dir": str(tmp_path / "run"), "plots": False, "tracking": []}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["run", str(cfg), "--no-progress"]) == 0
    reported = json.loads((run / "summary.json").read_text())["student"]["accuracy"]
    test = load_dataset("images", root=image_root, mode="RGB").test  # decoded at load this time
    student = load_student(run)
    assert type(student.model).__name__ == "InputAdapter"  # the conversion is saved with the student
    with torch.no_grad():
        logits = student.model.eval()(test.x)
    assert float((logits.argmax(1) == test.y).float().mean()) == pytest.approx(reported, abs=1e-9)
    capsys.readouterr()
    assert main(["export", str(run), "--format", "onnx"]) == 0
    session = onnxruntime.InferenceSession(str(run / "student.onnx"))
    exported = session.run(None, {session.get_inputs()[0].name: test.x.numpy()})[0]
    assert torch.allclose(torch.from_numpy(exported), logits, atol=1e-4)
