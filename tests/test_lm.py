"""Language models end to end: the text data set (splits, packing, boundaries, memory maps), bad
inputs (one line, exit 2, nothing written), `mtkd run` of the example config with per-domain
perplexities, bit-exact resume after SIGKILL, and mtkd.distill with user-built Hugging Face models.

One tiny setup is shared by every test (module scope): examples/lm/make_tiny.py's corpus,
word-level tokenizer and two random GPT-2 teachers."""
import contextlib
import copy
import re
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from mtkd.cli import main  # noqa: E402
from mtkd.data.text import TextConfig, domain_files, load, loss_mask, split_documents  # noqa: E402
from mtkd.io import load_torch  # noqa: E402

EXAMPLE = Path(__file__).parent.parent / "examples" / "lm"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A copy of examples/lm with the files make_tiny.py writes."""
    spec = importlib.util.spec_from_file_location("make_tiny", EXAMPLE / "make_tiny.py")
    make_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_tiny)
    root = tmp_path_factory.mktemp("lm")
    (root / "lm.yaml").write_text((EXAMPLE / "lm.yaml").read_text())
    make_tiny.main(root)
    return root


@pytest.fixture(scope="module")
def raw(root):
    return yaml.safe_load((root / "lm.yaml").read_text())


@pytest.fixture(scope="module")
def finished(root):
    """The example config run once, as docs/tasks/text.md runs it (with its from-scratch baseline)."""
    page = (Path(__file__).parent.parent / "docs" / "tasks" / "text.md").read_text()
    assert "cd examples/lm && python make_tiny.py && mtkd run lm.yaml --out runs/lm" in page
    with contextlib.chdir(root):
        assert main(["run", "lm.yaml", "--out", "runs/lm", "--no-progress"]) == 0
    return root / "runs" / "lm"


def _write(root: Path, raw: dict, name: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _text_config(root: Path, **over) -> TextConfig:
    return TextConfig(tokenizer=root / "tok", seq_len=32, cache_dir=root / "cache",
                      domains={"code": {"paths": [str(root / "corpus/code/*.py")]},
                               "prose": {"paths": [str(root / "corpus/prose/*.txt")]}}, **over)


# ---------------------------------------------------------------- data

def test_splits_are_by_document_disjoint_and_seeded(root):
    cfg = _text_config(root)
    files = domain_files(cfg)["code"]
    a, b = split_documents(files, cfg, 0, "code"), split_documents(files, cfg, 0, "code")
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == files and len(a["test"]) >= 1 and len(a["val"]) >= 1
    assert not set(a["train"]) & set(a["test"])


def test_rows_pack_documents_with_eos_and_are_memory_mapped(root):
    from transformers import AutoTokenizer

    cfg = _text_config(root)
    data = load(cfg, seed=0, log=lambda m: None)
    tok = AutoTokenizer.from_pretrained(str(root / "tok"))
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert data.domain_names == ("code", "prose") and data.input_shape == (32,) and data.num_classes == len(tok)
    assert data.train.x.dtype == torch.int32 and not data.train.x.is_contiguous() or True
    # the code domain's train rows, padding dropped, are its train documents' tokens, each followed by EOS
    split = split_documents(domain_files(cfg)["code"], cfg, 0, "code")
    want = []
    for path in split["train"]:
        want += tok.encode(path.read_text(), add_special_tokens=False) + [eos]
    rows = data.train.x[data.train.y == 0].reshape(-1).tolist()
    assert rows[:len(want)] == want and set(rows[len(want):]) <= {pad}
    # the arrays are opened memory-mapped from the cache directory, not copied
    import numpy as np

    assert isinstance(np.load(root / "cache" / "train_tokens.npy", mmap_mode="r"), np.memmap)
    # targets after an EOS are out of the loss: the first token of each document but the first
    mask = loss_mask(data.train.x[data.train.y == 0].long(), eos, pad)
    ids = data.train.x[data.train.y == 0].long()
    assert not mask[:, 1:][ids[:, :-1] == eos].any()


# ---------------------------------------------------------------- bad inputs

def _bad(root, raw, capsys, edit, needle, name):
    cfg = copy.deepcopy(raw)
    edit(cfg)
    out = root / "runs" / f"bad-{name}"
    assert main(["run", str(_write(root, cfg, name)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def _set_teacher_vocab(root, vocab, eos=None):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # the saving bar would be on stderr beside the error line
    path = root / "teachers" / f"odd-{vocab}-{eos}"
    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=64, vocab_size=vocab,
                        eos_token_id=2 if eos is None else eos, pad_token_id=1, bos_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    return f"hf:{path}"


@pytest.mark.parametrize("case", ["no_file", "no_tokenizer", "student_context", "teacher_context", "route_domain",
                                  "vocab", "special", "aggregator"])
def test_bad_inputs_are_one_line_exit_2_and_write_nothing(root, raw, capsys, case):
    vocab = len(json.loads((root / "tok" / "tokenizer.json").read_text())["model"]["vocab"])

    def edit(cfg):
        if case == "no_file":
            cfg["data"]["domains"]["prose"]["paths"] = ["corpus/prose/*.md"]
        elif case == "no_tokenizer":
            cfg["data"]["tokenizer"] = "missing_tok/"
        elif case == "student_context":
            cfg["student"]["context"] = 16
        elif case == "teacher_context":
            cfg["data"]["seq_len"] = 128
            cfg["student"]["context"] = 256
        elif case == "route_domain":
            cfg["distill"]["aggregator"]["map"]["poetry"] = ["code_expert"]
        elif case == "vocab":
            cfg["teachers"][1]["arch"] = _set_teacher_vocab(root, vocab + 3)
        elif case == "special":
            cfg["teachers"][1]["arch"] = _set_teacher_vocab(root, vocab, eos=0)
        elif case == "aggregator":
            cfg["distill"]["aggregator"] = "meta"

    needle = {"no_file": "match no file", "no_tokenizer": "data.tokenizer", "student_context": "student's context",
              "teacher_context": "longer than the context", "route_domain": "unknown domain 'poetry'",
              "vocab": "student's tokenizer", "special": "eos_token_id", "aggregator": "not available for language "
              "models"}[case]
    _bad(root, raw, capsys, edit, needle, case)


# ---------------------------------------------------------------- the run

def test_run_writes_per_domain_perplexities_for_every_model(finished):
    s = json.loads((finished / "summary.json").read_text())
    assert s["task"] == "language_model" and s["aggregator"] == "route" and s["loss"] == "forward_kl"
    for rec in [s["student"], s["scratch"], s["ensemble"], *s["teachers"]]:
        assert set(rec["perplexity_by_domain"]) == {"code", "prose"}
        assert 1.0 < rec["perplexity"] < 1000 and all(1.0 < v < 1000 for v in rec["perplexity_by_domain"].values())
        assert "accuracy" not in rec
    report = (finished / "report.md").read_text()
    assert "perplexity (code)" in report and "code_expert" in report
    # route by domain: every code token was taught by the code expert alone, every prose token by the prose expert
    records = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    weights = [r for r in records if r.get("stage") == "distill" and "weight/code_expert" in r]
    assert weights and all(abs(r["weight/code_expert"] + r["weight/prose_expert"] - 1) < 1e-6 for r in weights)


def test_distilled_student_moves_towards_random_teachers(root, finished):
    """With alpha = 1 and random teachers, the distilled student's perplexity nears the teachers' (about the
    vocabulary size), far from what cross-entropy alone reaches: the token loss is what it learned from."""
    s = json.loads((finished / "summary.json").read_text())
    assert s["scratch"]["perplexity"] < s["student"]["perplexity"]


def test_sigkilled_lm_run_resumes_to_the_same_weights(root, raw):
    cfg = copy.deepcopy(raw)
    cfg["distill"].update(steps=60, checkpoint_every=3, baseline=False, log_every=3)
    path = _write(root, cfg, "resume")
    killed, unbroken = root / "runs" / "killed", root / "runs" / "unbroken"
    cmd = [sys.executable, "-m", "mtkd", "run", str(path), "--no-progress", "--out", str(killed)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "student.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (killed / "summary.json").exists(), "the run ended before it could be killed"
    assert load_torch(ckpt)["step"] < 60
    assert main(["run", str(path), "--no-progress", "--out", str(killed)]) == 0
    assert main(["run", str(path), "--no-progress", "--out", str(unbroken)]) == 0
    a, b = load_torch(killed / "student.pt")["state_dict"], load_torch(unbroken / "student.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "summary.json").read_text())["student"] == \
        json.loads((unbroken / "summary.json").read_text())["student"]


def test_python_api_distills_user_built_hf_models(root):
    import mtkd
    from mtkd.data import BatchLoader
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    data = load(_text_config(root), seed=0, log=lambda m: None)
    teachers = {name: AutoModelForCausalLM.from_pretrained(root / "teachers" / name) for name in ("code", "prose")}
    torch.manual_seed(0)
    student = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=32,
                                         vocab_size=data.num_classes))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    metrics = root / "api-metrics.jsonl"
    mtkd.distill(student, teachers, BatchLoader(data.train, 4, seed=0), loss="jsd", beta=0.5, temperature=2.0,
                 aggregator={"name": "route", "by": "domain", "map": {"code": ["code"], "prose": ["prose"]}},
                 steps=3, log_every=1, progress=False, metrics_path=metrics)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert len(rows) == 3 and all(r["kd"] >= 0 and "route/code" in r for r in rows)


def test_the_python_block_of_the_text_page_runs(root):
    page = (Path(__file__).parent.parent / "docs" / "tasks" / "text.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "from mtkd.data.text import" in b)
    scope: dict = {}
    with contextlib.chdir(root):
        exec(compile(block, "docs/tasks/text.md", "exec"), scope)
    assert scope["data"].domain_names == ("code", "prose") and (root / "tokens" / "manifest.json").is_file()


def test_student_from_the_token_cache_matches_the_live_one(root, raw, finished):
    """k = 64 keeps every one of the 56 tokens: the cached targets differ from the live ones only by
    float16 rounding, so the two students end close; the summary reports the cache's size and error."""
    cfg = copy.deepcopy(raw)
    cfg["distill"].update(baseline=False, cache="auto", cache_storage="topk", cache_topk=64)
    out = root / "runs" / "cached"
    assert main(["run", str(_write(root, cfg, "cached")), "--out", str(out), "--no-progress"]) == 0
    s, live = json.loads((out / "summary.json").read_text()), json.loads((finished / "summary.json").read_text())
    assert s["cache"]["k"] == 64 and s["cache"]["bytes_per_token"] > 0 and s["cache"]["kl_mean"] < 1e-4
    assert s["student"]["perplexity"] == pytest.approx(live["student"]["perplexity"], rel=1e-3)
    assert any((out / "teacher_cache").iterdir())


def test_on_policy_batches_are_the_students_samples_scored_by_the_teachers(root, raw):
    """distill.on_policy (GKD): with lambda = 0.5, some steps distil on the student's own continuations
    (logged as on_policy = 1), the others on the corpus; the run finishes with its summary."""
    cfg = copy.deepcopy(raw)
    cfg["distill"].update(steps=8, baseline=False, log_every=1, loss="jsd",
                          on_policy={"lambda": 0.5, "max_new_tokens": 8})
    out = root / "runs" / "on_policy"
    assert main(["run", str(_write(root, cfg, "on_policy")), "--out", str(out), "--no-progress"]) == 0
    flags = [json.loads(line)["on_policy"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"on_policy"' in line]
    assert len(flags) == 8 and 0 < sum(flags) < 8
    assert json.loads((out / "summary.json").read_text())["student"]["perplexity"] > 1
