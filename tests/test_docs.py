"""The documentation stays true: the site builds with warnings as errors, the benchmark pages equal
what scripts/gen_docs.py makes of the results, and every shell command in README.md,
CONTRIBUTING.md and docs/ is executed.

Each command (a line of a ```bash block, or a `$ ` line of a transcript block) is either
- in VERBATIM: run as written in a temporary copy of configs/ and examples/ (an `mtkd` command
  in this process, through `mtkd.cli.main`, which is what the `mtkd` script calls), or
- in REDUCED: run in a smaller form, with the reason (by default the command itself plus FAST
  overrides that cut its config to a few samples and steps), or
- in ELSEWHERE: run by another test, or not runnable here, with the reason.
A command in none of them fails `test_every_command_is_accounted_for`, so a new command in the
docs cannot go unexecuted; an entry whose command left the docs fails it too.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]

VERBATIM = {
    "mtkd list",
    # a transcript: exit status 2 and the message the page shows
    "mtkd run configs/mnist1d.yaml --set distill.aggregator=median",
}
EXIT_STATUS = {"mtkd run configs/mnist1d.yaml --set distill.aggregator=median": 2}

_FULL = "a full run takes minutes; run with FAST overrides (a few samples and steps)"
REDUCED = {
    "mtkd demo --fast": ("the smoke test is still ~1 minute; the demo's config with FAST overrides",
                         ["mtkd run demo.yaml --out runs/demo-fast {fast}"]),
    "mtkd run configs/mnist1d.yaml --out runs/m1": _FULL,
    "mtkd run configs/mnist1d.yaml --out runs/m2 --set distill.aggregator=weighted --set teachers.0.weight=2": _FULL,
    "mtkd report runs/m1 runs/m2 --out runs/compare": ("verbatim, after the two reduced runs above",
                                                       ["mtkd report runs/m1 runs/m2 --out runs/compare"]),
    "mtkd run configs/digits.yaml": _FULL,
    "mtkd run configs/digits.yaml --out runs/digits": _FULL,
    "mtkd run configs/mnist1d-weighted.yaml --out runs/weighted --set distill.steps=2000": _FULL,
    "mtkd run configs/mnist1d-weighted.yaml": _FULL,
    "mtkd run configs/mnist1d-meta.yaml": _FULL,
    "mtkd run configs/mnist1d-semi.yaml": _FULL,
    "mtkd run configs/mnist1d-progressive.yaml": _FULL,
    "mtkd run configs/mnist1d-mutual.yaml": _FULL,
    "mtkd run configs/mnist1d-continual.yaml --out runs/lwf": _FULL,
    "mtkd run configs/mnist1d-continual.yaml --out runs/finetune --set distill.distillation=false": _FULL,
    "mtkd run configs/mnist1d.yaml --set distill.recipe=teacher_free --set distill.mode=virtual "
    "--set distill.temperature=20 --set distill.alpha=0.1 --set distill.multiplier=100": _FULL,
    "mtkd run configs/mnist1d.yaml --out runs/agg --set distill.aggregator=confidence --set distill.steps=3000": _FULL,
    "mtkd cache configs/mnist1d.yaml --out runs/cached": _FULL,
    "mtkd bench --teachers 1,2 --steps 5 --repeats 3 --json bench.json": (
        "timing repeats cost seconds; one repeat of one step", ["mtkd bench --teachers 1,2 --steps 1 --repeats 1 "
                                                                "--warmup 0 --samples 200 --json bench.json"]),
    "mtkd export runs/demo --format onnx": (
        "needs the full demo's run directory; exported from a FAST run of the demo's config",
        ["mtkd run demo.yaml --out runs/demo {fast}", "mtkd export runs/demo --format onnx"]),
    "mtkd export runs/demo --format torchscript --out student.pt": (
        "as above", ["mtkd run demo.yaml --out runs/demo {fast}",
                     "mtkd export runs/demo --format torchscript --out student.pt"]),
    "mtkd export runs/demo --format torchscript": (
        "as above", ["mtkd run demo.yaml --out runs/demo {fast}", "mtkd export runs/demo --format torchscript"]),
    "python scripts/gen_docs.py": ("it would rewrite the committed pages; --check compares them instead",
                                   ["python scripts/gen_docs.py --check"]),
}
ELSEWHERE = {
    "mkdocs build --strict --site-dir /tmp/mtkd-site": "test_site_builds below runs it into a temporary directory",
    "./scripts/install.sh && mtkd demo": "the README's set-up command: installs; tests/test_demo.py runs the demo",
    "./scripts/install.sh && python3 -m pytest tests": "the README's test command, which .ci/run runs (test_readme.py)",
    "./scripts/install.sh": "installs packages; the first half of both set-up commands, run by .ci/run",
    "python3 -m pytest tests": "the suite this test belongs to (.ci/run)",
    "python3 -m pytest tests/test_losses.py -q": "part of the suite this test belongs to",
    "pip install 'mtkd[onnx]'": "installs packages; the dev extra has them",
    "cd examples/mixed_pool && python3 make_teachers.py && mtkd run digits-mixed.yaml --allow-code":
        "tests/test_docs_teachers.py runs the page's make_teachers.py and config (fewer steps)",
    "mtkd select digits-mixed.yaml --allow-code": "tests/test_docs_teachers.py runs it on the teachers it made",
    "torchrun --standalone --nproc_per_node=2 -m mtkd run cfg.yaml --out runs/codist":
        "tests/test_online.py runs codistillation under torchrun with two CPU processes",
    "for agg in mean confidence; do for seed in 0 1 2; do mtkd run configs/mnist1d.yaml ...":
        "six runs on the full demo's teachers (about 13 minutes); tests/test_report.py runs mtkd report "
        "on groups of seeded runs",
    "mtkd report runs/cmp/* --out runs/cmp-report": "the second half of the loop above",
    "torchrun --standalone --nproc_per_node=2 -m mtkd run configs/mnist1d.yaml --out runs/ddp":
        "tests/test_ddp.py runs two gloo processes under torchrun",
    "scripts/gpu_check.sh": "needs a CUDA GPU; tests/test_gpu_check.py runs its --cpu part",
    "python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp.py":
        "a benchmark (two processes, interleaved repeats); its results are on the page",
    "cd examples/tabular": "the tabular tutorial's folder; tests/test_tabular_example.py runs the tutorial's "
                           "commands there",
    "python make_data.py": "tests/test_tabular_example.py runs it in a copy of examples/tabular",
    "cd examples/lm && python make_tiny.py && mtkd run lm.yaml --out runs/lm":
        "tests/test_lm.py runs make_tiny.py and lm.yaml (as written) in a copy of examples/lm",
    "mtkd run tabular.yaml": "tests/test_tabular_example.py runs it on the files make_data.py wrote (100 steps)",
    "mtkd predict runs/tabular data/test.csv --out predictions.csv":
        "tests/test_tabular_example.py predicts with the tutorial's student and checks the accuracy",
    "python score.py predictions.csv data/test.csv": "tests/test_tabular_example.py scores the predictions",
    "mtkd export runs/tabular": "tests/test_tabular.py exports a tabular run and checks the preprocessing inside",
    "mtkd list --models timm": "needs the vision extra; tests/test_model_sources.py runs it",
    "mtkd run configs/digits-vision.yaml --out runs/vision": "needs the vision extra; tests/test_model_sources.py "
        "and tests/test_augment_views.py run the same sources, augmentation and view cache on tiny models",
    "python benchmarks/vision.py --seeds 0 --steps 20 --teacher-steps 20 --out runs/vision-bench": "a benchmark (about 2 minutes on "
        "a loaded 2-core machine); needs the vision extra",
}
# python blocks that are not run here: the README's quickstart is run by test_readme.py
PYTHON_ELSEWHERE = {
    "import mtkd\nfrom mtkd.data import BatchLoader\nfrom mtkd.data.text import TextConfig, load":
        "tests/test_lm.py runs it in the folder make_tiny.py filled",
    "mkdocs build --strict --site-dir /tmp/mtkd-site": "test_site_builds below runs it into a temporary directory",
    "# make_teachers.py": "tests/test_docs_teachers.py runs it (and checks it equals examples/mixed_pool/)",
    "from mtkd.teachers import SklearnTeacher": "a fragment with a reader's objects (fitted_forest, my_torch_cnn); "
                                                "tests/test_external_teachers.py tests the classes",
    "import mtkd\nimport pandas as pd\n": "tests/test_tabular_example.py runs it on the tutorial's run directory",
    "# src/mtkd/aggregation/sharpest.py": "tests/test_contract.py runs the page's aggregator through mtkd.distill",
    '    "sharpest": SharpestAggregator,': "its table entry; tests/test_contract.py adds it as written",
    "class Recipe(Protocol):": "a quote of recipes/base.py; tests/test_contract.py checks each line is there",
    "def step(self, x, y, index):": "a quote of recipes/offline.py; tests/test_contract.py checks each line is there",
    "import torch\nfrom mtkd.cache.tokens import TokenCache": "tests/test_token_cache.py::test_the_docs_example_runs "
                                                            "runs it as written",
    "from mtkd import export_model, export_student": "needs the demo's run; tests/test_export.py calls both",
    "# torchrun --standalone --nproc_per_node=2 train.py": "needs torchrun; tests/test_ddp.py runs the API under "
                                                           "torchrun with a user DistributedSampler (tests/ddp_worker.py), "
                                                           "not this block as written",
}

# FAST: what "{fast}" (and a bare REDUCED reason) appends to `mtkd run|cache CONFIG`
FAST_DISTILL = {"steps": 4, "baseline": False, "eval_every": 2, "log_every": 2}


def _fast(config: Path) -> str:
    cfg = yaml.safe_load(config.read_text())
    sets = {"output.plots": "false", "output.tracking": "[]"}
    data = cfg.get("data", {})
    if data.get("name") == "mnist1d":
        sets["data.num_samples"] = "300"
        if data.get("unlabeled"):
            sets["data.unlabeled"] = "100"
    for i, teacher in enumerate(cfg.get("teachers") or []):
        if "arch" in teacher and "checkpoint" not in teacher:
            sets[f"teachers.{i}.train.steps"] = "4"
            if (teacher.get("train") or {}).get("save_every"):
                sets[f"teachers.{i}.train.save_every"] = "2"
    for key, value in FAST_DISTILL.items():
        sets[f"distill.{key}"] = str(value).lower()
    if (cfg.get("distill") or {}).get("monitor_every"):
        sets["distill.monitor_every"] = "2"
    return " ".join(f"--set {k}={v}" for k, v in sets.items()) + " --no-progress"


def commands(text: str) -> list[str]:
    """The commands of a page: ```bash lines (continuations joined, comments dropped, a `for` loop
    kept as one command) and `$ ` lines of plain ``` blocks."""
    found = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang == "bash":
            lines = [re.sub(r"\s+#\s.*$", "", line).rstrip() for line in body.splitlines()]
            joined, current = [], ""
            for line in lines:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                current = f"{current} {line.strip()}" if current else line.strip()
                if current.endswith("\\"):
                    current = current[:-1].rstrip()
                elif current.startswith("for ") and not current.endswith("done"):
                    current += ";" if not current.endswith(("do", ";")) else ""
                else:
                    joined.append(" ".join(current.split()))
                    current = ""
            found += joined
        elif lang == "":
            found += [line[2:].strip() for line in body.splitlines() if line.startswith("$ ")]
    return found


def all_commands() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for page in PAGES:
        for command in commands(page.read_text()):
            out.setdefault(command, []).append(str(page.relative_to(ROOT)))
    return out


def _entry(command: str, table: dict) -> str | None:
    for key in table:
        if command == key or (key.endswith(" ...") and command.startswith(key[:-4])):
            return key
    return None


def test_every_command_is_accounted_for():
    found = all_commands()
    assert "mtkd list" in found and len(found) > 15, "the extraction found too little"
    unaccounted = [f"{c!r} ({', '.join(pages)})" for c, pages in found.items()
                   if not (c in VERBATIM or _entry(c, REDUCED) or _entry(c, ELSEWHERE))]
    assert not unaccounted, "commands in the docs that no test runs; add each to a table of tests/test_docs.py:\n" + \
        "\n".join(unaccounted)
    stale = [key for table in (VERBATIM, REDUCED, ELSEWHERE) for key in table
             if not any(c == key or (key.endswith(" ...") and c.startswith(key[:-4])) for c in found)]
    assert not stale, f"table entries no page has any more: {stale}"


def test_every_python_block_is_run_somewhere():
    readme = (ROOT / "README.md").read_text()
    quickstart = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    for page in PAGES:
        for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            if block == quickstart:
                continue  # tests/test_readme.py runs it
            assert any(block.startswith(start) for start in PYTHON_ELSEWHERE), \
                f"{page.relative_to(ROOT)}: a python block no test runs:\n{block[:200]}"


@contextlib.contextmanager
def _chdir(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _run(command: str, cwd: Path) -> tuple[int, str]:
    """Run one command in cwd: `mtkd ...` through mtkd.cli.main in this process, others in bash."""
    if command.startswith("mtkd "):
        from mtkd.cli import main

        out, err = io.StringIO(), io.StringIO()
        with _chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(shlex.split(command)[1:])
            except SystemExit as stop:
                rc = stop.code if isinstance(stop.code, int) else 1
        return rc, out.getvalue() + err.getvalue()
    proc = subprocess.run(["bash", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_commands_run(tmp_path):
    import torch

    from mtkd.demo import demo_config

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(demo_config(True)))
    threads = torch.get_num_threads()
    found, failures = all_commands(), []
    try:
        for command in found:
            key = _entry(command, REDUCED)
            if command in VERBATIM:
                runs = [command]
            elif key is not None:
                entry = REDUCED[key]
                runs = entry[1] if isinstance(entry, tuple) else [command + " {fast}"]
            else:
                continue
            for run in runs:
                if "{fast}" in run:
                    config = next(a for a in shlex.split(run)[2:] if a.endswith(".yaml"))
                    run = run.replace("{fast}", _fast(tmp_path / config))
                rc, output = _run(run, tmp_path)
                expected = EXIT_STATUS.get(command, 0)
                if rc != expected:
                    failures.append(f"{run!r}: exit status {rc}, expected {expected}\n{output[-1500:]}")
    finally:
        torch.set_num_threads(threads)
    assert not failures, "\n\n".join(failures)


def test_transcripts_show_what_the_command_prints(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    page = (ROOT / "docs" / "cli.md").read_text()
    shown = re.search(r"^\$ (mtkd run configs/mnist1d.yaml --set distill.aggregator=median)\n(.*)$", page, re.M)
    rc, output = _run(shown.group(1), tmp_path)
    assert rc == 2 and output.strip() == shown.group(2).strip()


def test_benchmark_pages_equal_the_generated_ones():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers_of_superseded_methods_are_marked_on_the_benchmark_pages():
    gen_docs = _gen_docs()
    tables = ("| `ffl` | 80.1 |\n| `waffle` | 2 |\n| FFL (fused) | 84.9 |\n| `local_targets (pool)` | 3 |\n"
              "by `local_targets`: 90.6")
    assert gen_docs.mark_superseded(tables, ["ffl", "local_targets", "local_targets (pool)"]) == (
        "| `ffl` † | 80.1 |\n| `waffle` | 2 |\n| FFL † (fused) | 84.9 |\n| `local_targets (pool)` † | 3 |\n"
        "by `local_targets` †: 90.6\n\n" + gen_docs.SUPERSEDED_NOTE)
    assert gen_docs.mark_superseded("| `mean` | 87.6 |", ["ffl"]) == "| `mean` | 87.6 |"
    # every page whose notes name superseded methods marks something and shows a re-run
    for notes in sorted((ROOT / "benchmarks" / "notes").glob("*.md")):
        meta, body = gen_docs._front_matter(notes.read_text())
        if meta.get("superseded"):
            page = gen_docs.page(notes.stem)
            assert gen_docs.SUPERSEDED_NOTE in page, notes.name
            assert "{{rerun " in body, f"{notes.name}: superseded methods but no re-run"


def test_site_builds(tmp_path):
    if shutil.which("mkdocs") is None and not _importable("mkdocs"):
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'); the site build is not checked")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                           "--config-file", str(ROOT / "mkdocs.yml")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1",
                               "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").read_text().count('id="mtkd.distill"') == 1


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
