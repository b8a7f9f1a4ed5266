"""Teachers from outside mtkd's zoo: each kind loads and predicts on a tiny model made here,
classes are mapped by name, partial teachers get no vote on their missing classes, pickles
are refused without the opt-in, and a missing extra names the pip command."""
import pickle
import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mtkd.aggregation import AggregatorContext, build_aggregator
from mtkd.recipes.offline import TeacherTargets
from mtkd.aggregation.coverage import coverage_mix
from mtkd.config import parse_config
from mtkd.errors import ConfigError, MtkdError
from mtkd.evaluation import ensemble_probs
from mtkd.teachers import FrozenTeacher
from mtkd.teachers.external import MISSING_LOGIT
from mtkd.teachers.onnx_model import OnnxTeacher
from mtkd.teachers.sklearn_model import SklearnTeacher, load_estimator
from mtkd.teachers.state_dict_model import StateDictTeacher
from mtkd.teachers.torchscript_model import TorchScriptTeacher

CLASSES = ["a", "b", "c"]


@pytest.fixture
def torch_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture
def x():
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(1))


def export_onnx(model, path, shape=(4,)):
    torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def fitted_sklearn(seed=0):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(60, 4))
    ys = np.array(["c", "a", "b"])[rng.integers(0, 3, 60)]
    return LogisticRegression(max_iter=200).fit(xs, ys)


def test_onnx_teacher_matches_torch(torch_model, x, tmp_path):
    teacher = OnnxTeacher(export_onnx(torch_model, tmp_path / "m.onnx"), CLASSES, name="onnx")
    out = teacher(x)
    assert out.shape == (6, 3)
    assert torch.allclose(out, torch_model(x).detach(), atol=1e-5)
    assert not teacher.partial


def test_onnx_teacher_reshapes_flat_inputs_to_its_image_shape(tmp_path):
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3)).eval()
    teacher = OnnxTeacher(export_onnx(cnn, tmp_path / "cnn.onnx", (1, 4, 4)), CLASSES)
    images = torch.randn(5, 1, 4, 4)
    assert torch.allclose(teacher(images.reshape(5, 16)), cnn(images).detach(), atol=1e-5)


def test_onnx_probabilities_become_log_probabilities(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    teacher = OnnxTeacher(export_onnx(model, tmp_path / "p.onnx"), CLASSES, outputs="probabilities")
    x = torch.randn(3, 4)
    assert torch.allclose(teacher(x), torch.log(model(x)).detach(), atol=1e-5)


def test_sklearn_teacher_maps_classes_by_name(x):
    est = fitted_sklearn()
    assert list(est.classes_) == ["a", "b", "c"]
    # the data set orders its classes c, a, b: column j of the output is class data_classes[j]
    teacher = SklearnTeacher(est, ["c", "a", "b"])
    proba = est.predict_proba(x.numpy())  # columns a, b, c
    expected = np.log(proba[:, [2, 0, 1]])
    assert np.allclose(teacher(x).numpy(), expected, atol=1e-5)


def test_given_class_order_is_mapped(torch_model, x, tmp_path):
    # the model's outputs are classes c, b, a (reversed against the data set)
    teacher = OnnxTeacher(export_onnx(torch_model, tmp_path / "m.onnx"), CLASSES, classes=["c", "b", "a"])
    assert torch.allclose(teacher(x), torch_model(x).detach()[:, [2, 1, 0]], atol=1e-5)


def test_partial_teacher_masks_missing_classes(torch_model, x, tmp_path):
    # a teacher of 3 classes, two of them in a 4-class data set, one ('z') unknown to it
    teacher = OnnxTeacher(export_onnx(torch_model, tmp_path / "m.onnx"), ["a", "b", "c", "d"],
                          classes=["b", "z", "d"])
    out = teacher(x)
    logits = torch_model(x).detach()
    kept = torch.log_softmax(logits[:, [0, 2]], 1)  # 'z' dropped, b and d renormalised
    assert torch.equal(teacher.class_mask, torch.tensor([False, True, False, True]))
    assert torch.allclose(out[:, [1, 3]], kept, atol=1e-5)
    assert (out[:, [0, 2]] == MISSING_LOGIT).all()
    assert (torch.softmax(out / 4.0, 1)[:, [0, 2]] == 0).all()  # no vote, even softened


def test_teacher_with_no_shared_class_is_refused(torch_model, tmp_path):
    with pytest.raises(MtkdError, match="none of its classes"):
        OnnxTeacher(export_onnx(torch_model, tmp_path / "m.onnx"), CLASSES, classes=["x", "y", "z"])


def test_torchscript_teacher(torch_model, x, tmp_path):
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(torch_model, torch.zeros(1, 4)), str(path))
    with pytest.raises(MtkdError, match="allow_code: true"):  # a TorchScript file is a program: opt-in only
        TorchScriptTeacher(path, CLASSES, (4,))
    with pytest.raises(MtkdError, match=r"does not accept the data's inputs \[batch, 5\]"):
        TorchScriptTeacher(path, CLASSES, (5,), allow_code=True)
    teacher = TorchScriptTeacher(path, CLASSES, (4,), allow_code=True)
    assert torch.allclose(teacher(x), torch_model(x).detach(), atol=1e-6)
    assert sum(p.numel() for p in teacher.parameters()) == 4 * 8 + 8 + 8 * 3 + 3


def test_state_dict_teacher_with_builtin_arch(x, tmp_path):
    from mtkd.models import MODELS, build_model

    cfg = MODELS["mlp"].config.model_validate({"arch": "mlp", "hidden": [8]})
    torch.manual_seed(3)
    model = build_model(cfg, (4,), 3).eval()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    teacher = StateDictTeacher(tmp_path / "w.pt", cfg, CLASSES, (4,))
    assert torch.allclose(teacher(x), model(x).detach())
    wrong = MODELS["mlp"].config.model_validate({"arch": "mlp", "hidden": [5]})
    with pytest.raises(MtkdError, match="do not fit arch 'mlp'"):
        StateDictTeacher(tmp_path / "w.pt", wrong, CLASSES, (4,))


def test_pickle_refused_without_opt_in(tmp_path):
    path = tmp_path / "est.pkl"
    with open(path, "wb") as handle:
        pickle.dump(fitted_sklearn(), handle)
    with pytest.raises(MtkdError, match="allow_pickle: true"):
        load_estimator(path, allow_pickle=False)
    assert list(load_estimator(path, allow_pickle=True).classes_) == ["a", "b", "c"]


def test_pickle_refused_in_a_config_before_anything_runs(tmp_path):
    path = tmp_path / "est.pkl"
    with open(path, "wb") as handle:
        pickle.dump(fitted_sklearn(), handle)
    from mtkd.pipeline import prepare

    raw = {"data": {"name": "digits", "shape": "flat"}, "teachers": [{"name": "lr", "kind": "sklearn", "path": str(path)}]}
    with pytest.raises(MtkdError, match="runs code from the file"):
        prepare(parse_config(raw))


@pytest.mark.parametrize("module, extra, make", [
    ("onnxruntime", "onnx", lambda p: OnnxTeacher(p, CLASSES)),
    ("sklearn", "sklearn", lambda p: load_estimator(p, allow_pickle=True)),
])
def test_missing_extra_names_the_pip_command(module, extra, make, monkeypatch, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MtkdError, match=rf"pip install 'mtkd\[{extra}\]'"):
        make(path)


def test_config_validates_teacher_kinds(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\0")
    base = {"data": {"name": "digits"}}
    cfg = parse_config({**base, "teachers": [{"name": "o", "kind": "onnx", "path": str(path), "weight": 2}]})
    assert cfg.teachers[0].external.kind == "onnx" and cfg.teachers[0].weight == 2.0
    entry = cfg.to_dict()["teachers"][0]
    assert entry["kind"] == "onnx" and entry["path"] == str(path) and "train" not in entry
    assert parse_config({**base, "teachers": [entry]}).to_dict() == cfg.to_dict()  # the resolved config re-parses
    for bad, message in [({"kind": "tf"}, "unknown teacher kind 'tf'"),
                         ({"kind": "onnx", "path": str(path), "hidden": 3}, "unknown key for a teacher of kind"),
                         ({"kind": "onnx", "path": str(tmp_path / "none.onnx")}, "path: not found"),
                         ({"kind": "onnx", "path": str(path), "outputs": "odds"}, "outputs"),
                         ({"kind": "state_dict", "path": str(path)}, "needs 'arch'")]:
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, "teachers": [{"name": "t", **bad}]})


# ---------------------------------------------------------------- partial teachers in the ensemble

def test_coverage_mix_by_hand():
    # 2 teachers, 1 sample, 3 classes; teacher 1 covers only classes 0 and 1
    probs = torch.tensor([[[0.2, 0.3, 0.5]], [[0.6, 0.4, 0.0]]])  # [K=2, B=1, C=3]
    masks = torch.tensor([[True, True, True], [True, True, False]])
    weights = torch.tensor([[0.25, 0.75]])  # [B, K]
    # class 0: (0.25*0.2 + 0.75*0.6) / 1 = 0.5; class 1: (0.25*0.3 + 0.75*0.4) / 1 = 0.375;
    # class 2: only teacher 0 covers it: 0.25*0.5 / 0.25 = 0.5; total 1.375
    expected = torch.tensor([[0.5, 0.375, 0.5]]) / 1.375
    assert torch.allclose(coverage_mix(probs, weights, masks), expected)
    # with full coverage it is the ordinary mixture
    full = torch.ones(2, 3, dtype=torch.bool)
    assert torch.allclose(coverage_mix(probs, weights, full), torch.tensor([[0.5, 0.375, 0.125]]))


class Fixed(nn.Module):
    def __init__(self, logits, mask=None):
        super().__init__()
        self.logits = logits
        if mask is not None:
            self.class_mask = mask

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_aggregation_and_ensemble_renormalise_over_covering_teachers():
    full = Fixed(torch.log(torch.tensor([[0.2, 0.3, 0.5]])))
    partial = Fixed(torch.tensor([[float(np.log(0.6)), float(np.log(0.4)), MISSING_LOGIT]]), torch.tensor([True, True, False]))
    teachers = [FrozenTeacher(full, "full"), FrozenTeacher(partial, "partial")]
    targets = TeacherTargets(teachers, build_aggregator("mean", AggregatorContext(teachers, 3)), nn.Linear(4, 3), 1.0)
    assert torch.equal(targets.class_masks, torch.tensor([[True, True, True], [True, True, False]]))
    x = torch.zeros(1, 4)
    logits = torch.stack([t(x) for t in teachers])  # [2, 1, 3]
    # equal weights: class 0: 0.4, class 1: 0.35, class 2: 0.5 (teacher 0 alone); sum 1.25
    expected = torch.tensor([[0.4, 0.35, 0.5]]) / 1.25
    student = torch.log(expected)  # a student already at the target has KD loss 0
    kd, weights = targets.kd(student, logits, torch.tensor([-1]))
    assert abs(float(kd)) < 1e-6 and torch.allclose(weights, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(ensemble_probs([full, partial], x), expected)
    # full teachers only: no masks, the aggregator's target is used as it is
    assert TeacherTargets(teachers[:1], build_aggregator("mean", AggregatorContext(teachers[:1], 3)), nn.Linear(4, 3),
                          1.0).class_masks is None


def test_pipeline_runs_a_mixed_pool(torch_model, tmp_path):
    """A config mixing a built-in teacher, an ONNX teacher and a pickled scikit-learn teacher
    (covering only digits 0-4) on digits; the run finishes and reports every teacher."""
    from sklearn.linear_model import LogisticRegression

    from mtkd.data import load_dataset
    from mtkd.pipeline import run_pipeline

    data = load_dataset("digits", shape="flat")
    keep = data.train.y < 5
    est = LogisticRegression(max_iter=300).fit(data.train.x[keep].numpy(), data.train.y[keep].numpy())
    with open(tmp_path / "lr.pkl", "wb") as handle:
        pickle.dump(est, handle)
    torch.manual_seed(0)
    export_onnx(nn.Linear(64, 10), tmp_path / "lin.onnx", (64,))
    raw = {"data": {"name": "digits", "shape": "flat"},
           "teachers": [{"name": "mlp", "arch": "mlp", "hidden": [32], "train": {"steps": 100}},
                        {"name": "onnx", "kind": "onnx", "path": str(tmp_path / "lin.onnx")},
                        {"name": "lr04", "kind": "sklearn", "path": str(tmp_path / "lr.pkl"), "allow_pickle": True}],
           "student": {"arch": "mlp", "hidden": [16]},
           "distill": {"steps": 200, "batch_size": 64, "eval_every": 100},
           "output": {"plots": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    summary = run_pipeline(parse_config(raw), tmp_path / "run", progress=False, log=lambda m: None)
    names = [t["name"] for t in summary["teachers"]]
    accs = {t["name"]: t["accuracy"] for t in summary["teachers"]}
    assert names == ["mlp", "onnx", "lr04"]
    assert [t["arch"] for t in summary["teachers"]] == ["mlp", "onnx", "sklearn"]  # the built-in arch, or the kind
    assert 0.3 < accs["lr04"] < 0.6  # right on (about) the half of the test set it covers
    assert summary["student"]["accuracy"] > 0.5

    # export finds the file teachers again, so the ensemble it times is the run's whole pool
    from mtkd.export import export_student

    # the run's config opted in to the pickle, but a run directory may come from someone else:
    # export loads it only with its own allow_code (--allow-code)
    assert export_student(tmp_path / "run", "onnx")["ms_per_1000"]["ensemble_missing"] == ["lr04"]
    result = export_student(tmp_path / "run", "onnx", allow_code=True)
    assert result["ms_per_1000"]["teachers"] == 3 and "ensemble_missing" not in result["ms_per_1000"]
    (tmp_path / "lin.onnx").rename(tmp_path / "moved.onnx")  # a teacher file gone: export still works
    assert export_student(tmp_path / "run", "onnx", allow_code=True)["ms_per_1000"]["ensemble_missing"] == ["onnx"]


# ---------------------------------------------------------------- Hugging Face

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "fun", "boring"]


def save_tiny_hf(path, id2label=None):
    """A randomly initialised 1-layer BERT classifier and its tokenizer, saved offline."""
    transformers = pytest.importorskip("transformers")
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(str(path / "vocab.txt"))
    labels = id2label or {0: "neg", 1: "pos"}
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=len(labels),
                                  id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return model, tokenizer


def test_hf_teacher_maps_id2label_and_matches_the_model(tmp_path):
    from mtkd.teachers.hf_model import HfTeacher

    model, tokenizer = save_tiny_hf(tmp_path / "hf")
    teacher = HfTeacher(tmp_path / "hf", ["pos", "neg"])  # the data set lists pos first
    ids = teacher.encode(["good movie", "boring bad movie"], max_length=6)
    assert ids[0, :4].tolist() == [2, 5, 7, 3] and ids[0, 4:].tolist() == [0, 0]  # [CLS] good movie [SEP] pad
    with torch.no_grad():
        direct = model(input_ids=ids.long(), attention_mask=(ids != 0).long()).logits
    assert torch.allclose(teacher(ids), direct[:, [1, 0]], atol=1e-5)
    with pytest.raises(MtkdError, match="needs token ids"):
        teacher(torch.full((1, 6), 99.0))


def test_hf_disk_text_column_is_tokenized_for_hf_teachers(tmp_path):
    datasets = pytest.importorskip("datasets")
    from mtkd.data import load_dataset
    from mtkd.teachers.hf_model import HfTeacher

    save_tiny_hf(tmp_path / "hf")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    split = datasets.Dataset.from_dict({"sentence": ["good fun movie", "bad boring"], "label": [1, 0]}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "ds"))
    data = load_dataset("hf_disk", path=str(tmp_path / "ds"), text="sentence", tokenizer=str(tmp_path / "hf"),
                        max_length=8, val_fraction=0)
    assert data.input_shape == (8,) and data.train.x[0, :5].tolist() == [2, 5, 8, 7, 3]
    teacher = HfTeacher(tmp_path / "hf", data.class_names)
    assert teacher(data.train.x).shape == (2, 2)
    # the same through a config: an hf teacher on the tokenized data set passes the pipeline's checks
    from mtkd.pipeline import prepare

    raw = {"data": {"name": "hf_disk", "path": str(tmp_path / "ds"), "text": "sentence", "tokenizer": str(tmp_path / "hf"),
                    "max_length": 8, "val_fraction": 0},
           "teachers": [{"name": "bert", "kind": "hf", "path": str(tmp_path / "hf")}]}
    plan = prepare(parse_config(raw)).teachers[0]
    assert plan.arch.arch == "hf" and torch.allclose(plan.model(data.train.x), teacher(data.train.x))


def test_hf_teacher_without_transformers_names_the_extra(tmp_path, monkeypatch):
    from mtkd.teachers.hf_model import HfTeacher

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MtkdError, match=r"pip install 'mtkd\[hf\]'"):
        HfTeacher(tmp_path, ["a", "b"])


def test_python_api_distills_from_a_mixed_pool():
    import mtkd
    from mtkd.teachers import SklearnTeacher

    est = fitted_sklearn()
    torch.manual_seed(0)
    xs = torch.randn(40, 4)
    ys = torch.tensor([CLASSES.index(c) for c in est.predict(xs.numpy())])
    data = mtkd.IndexedTensorDataset(xs, ys)
    student = nn.Linear(4, 3)
    before = student.weight.detach().clone()
    teachers = {"lr": SklearnTeacher(est, CLASSES), "net": nn.Linear(4, 3)}
    mtkd.distill(student, teachers, mtkd.BatchLoader(data, 10), steps=5, progress=False)
    assert not torch.equal(before, student.weight)


def test_cache_key_of_a_file_teacher_follows_the_file(torch_model, tmp_path):
    """An ONNX teacher has no state_dict: the cache must key on the file's bytes, or a replaced
    file would be served the old outputs."""
    from mtkd.cache.store import teacher_fingerprint

    path = export_onnx(torch_model, tmp_path / "m.onnx")
    first = OnnxTeacher(path, CLASSES, name="onnx")
    first.set_source(path)
    again = OnnxTeacher(path, CLASSES, name="onnx")
    again.set_source(path)
    assert teacher_fingerprint(first) == teacher_fingerprint(again)
    with torch.no_grad():
        torch_model[0].weight.add_(1.0)
    export_onnx(torch_model, path)  # same name, new weights
    changed = OnnxTeacher(path, CLASSES, name="onnx")
    changed.set_source(path)
    assert teacher_fingerprint(changed) != teacher_fingerprint(first)
    remapped = OnnxTeacher(path, CLASSES, classes=["c", "b", "a"], name="onnx")
    remapped.set_source(path)
    assert teacher_fingerprint(remapped) != teacher_fingerprint(changed)
    in_memory = OnnxTeacher(path, CLASSES, name="onnx")  # no source recorded: never a cache hit
    assert teacher_fingerprint(in_memory) != teacher_fingerprint(OnnxTeacher(path, CLASSES, name="onnx"))
