"""Language models on real text that installs offline: one expert teacher per domain, then a
smaller student from scratch on the union, distilled with `mean`, with `route` by domain, and
with `route` from the top-k + tail token cache; per-domain test perplexity over student seeds.

    python benchmarks/lm.py                          # 3 seeds (about 30 minutes on one loaded core)
    python benchmarks/lm.py --seeds 0 --steps 50 --teacher-steps 50   # a quick look

Corpus (copied into benchmarks/.cache/lm/corpus, git-ignored; origin and sizes are written to
the results):
- code:  the Python standard library's top-level modules of the running interpreter
         (``sysconfig.get_paths()['stdlib']/*.py``), files of 4-40 kB, deduplicated by content;
- prose: the licence texts in /usr/share/common-licenses (Debian's base-files) and the
         licence files of the installed Python packages (``*.dist-info/**/LICENSE*``,
         ``licenses/*``), files of 2-60 kB, deduplicated by content.
A byte-level BPE tokenizer (``tokenizers``) with a 2,048-token vocabulary is trained on every
file of both domains. An expert ``gpt`` teacher (layers 2, dim 128, heads 4) is trained from
scratch on its domain's training documents (seed 0; shared by every student seed), then per seed
the student (``gpt`` layers 1, dim 64, heads 4) is trained four ways. Every run is an
``mtkd run`` of a config this script writes (mtkd.run_pipeline), in benchmarks/.cache/lm/seedN/.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import shutil
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch

from mtkd.config import parse_config
from mtkd.io import write_json, write_text
from mtkd.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "lm"
SEQ_LEN, VOCAB = 64, 2048
TEACHER = {"arch": "gpt", "layers": 2, "dim": 128, "heads": 4, "context": SEQ_LEN}
STUDENT = {"arch": "gpt", "layers": 1, "dim": 64, "heads": 4, "context": SEQ_LEN}
VARIANTS = {  # name -> distill keys
    "scratch": {"recipe": "scratch"},
    "mean": {"recipe": "offline", "aggregator": "mean"},
    "route": {"recipe": "offline", "aggregator": {"name": "route", "by": "domain",
                                                   "map": {"code": ["code_expert"], "prose": ["prose_expert"]}}},
    "route_cache": {"recipe": "offline", "cache": "always", "cache_storage": "topk", "cache_topk": 64,
                    "cache_dir": str(CACHE / "teacher_cache"),  # built once, on the shared split's rows
                    "aggregator": {"name": "route", "by": "domain",
                                   "map": {"code": ["code_expert"], "prose": ["prose_expert"]}}},
}


def _unique(paths, low: int, high: int) -> list[Path]:
    seen, out = set(), []
    for p in sorted(paths):
        p = Path(p)
        if not p.is_file() or not low <= p.stat().st_size <= high:
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(p)
    return out


def make_corpus() -> dict:
    """Copy the two domains' files into CACHE/corpus; returns their origin and sizes."""
    stdlib = sysconfig.get_paths()["stdlib"]
    site = sysconfig.get_paths()["purelib"]
    sources = {
        "code": _unique(glob.glob(f"{stdlib}/*.py"), 4_000, 40_000),
        "prose": _unique(glob.glob("/usr/share/common-licenses/*") + glob.glob(f"{site}/*.dist-info/**/LICEN[CS]E*",
                                                                               recursive=True)
                         + glob.glob(f"{site}/*.dist-info/licenses/**/*", recursive=True), 2_000, 60_000),
    }
    info = {}
    for domain, files in sources.items():
        folder = CACHE / "corpus" / domain
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copyfile(f, folder / f"{i:04d}.txt")
        info[domain] = {"files": len(files), "bytes": sum(f.stat().st_size for f in files),
                        "origin": stdlib + "/*.py" if domain == "code" else
                        "/usr/share/common-licenses/* and the installed packages' licence files"}
    return info


def make_tokenizer() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(sorted(str(p) for p in (CACHE / "corpus").rglob("*.txt")), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>").save_pretrained(CACHE / "tok")


def data_section(domains) -> dict:
    # one document split for every run (split_seed 0): the experts never see the students' test documents
    return {"name": "text", "tokenizer": str(CACHE / "tok"), "seq_len": SEQ_LEN, "split_seed": 0,
            "domains": {d: {"paths": [str(CACHE / "corpus" / d / "*.txt")]} for d in domains}}


def run(raw: dict, out: Path) -> dict:
    return run_pipeline(parse_config(raw), out, progress=False, log=lambda m: print(f"    {m}", flush=True))


def experts(seed: int, steps: int) -> dict[str, Path]:
    """The two experts, trained once (seed 0) and shared by every student seed: the seeds vary the
    students' initialisation and batch order, not the teachers."""
    paths = {}
    for domain in ("code", "prose"):
        out = CACHE / "experts" / f"expert_{domain}"
        raw = {"seed": 0, "data": data_section([domain]), "student": TEACHER,
               "distill": {"recipe": "scratch", "steps": steps, "batch_size": 16, "lr": 3e-3, "warmup_steps": 50,
                           "log_every": 50, "checkpoint_every": 200},
               "output": {"tracking": [], "plots": False}}
        print(f"expert {domain}", flush=True)
        run(raw, out)
        paths[domain] = out / "student.pt"
    return paths


def student(seed: int, variant: str, teacher_files: dict, steps: int) -> dict:
    out = CACHE / f"seed{seed}" / variant
    raw = {"seed": seed, "data": data_section(["code", "prose"]), "student": STUDENT,
           "teachers": [] if variant == "scratch" else
           [{"name": f"{d}_expert", "checkpoint": str(teacher_files[d])} for d in ("code", "prose")],
           "distill": {"steps": steps, "batch_size": 16, "lr": 3e-3, "warmup_steps": 50, "temperature": 1.0,
                       "alpha": 0.5, "loss": "forward_kl", "log_every": 50, "checkpoint_every": 200,
                       **VARIANTS[variant]},
           "output": {"tracking": [], "plots": False}}
    print(f"seed {seed}: student {variant}", flush=True)
    return run(raw, out)


def _cell(values) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def tables(results: dict) -> str:
    rows = {}  # model -> domain -> [values over seeds]
    for seed_results in results["runs"].values():
        for name, s in seed_results.items():
            rows.setdefault(f"student: {name}", {})
            for d, v in {**s["student"]["perplexity_by_domain"], "all": s["student"]["perplexity"]}.items():
                rows[f"student: {name}"].setdefault(d, []).append(v)
            if name == "mean":  # the teachers (and their ensemble) are the same in every distilled run
                for t in s["teachers"] + ([dict(s["ensemble"], name="ensemble (mean of 2)")] if "ensemble" in s else []):
                    key = f"teacher: {t['name']}"
                    rows.setdefault(key, {})
                    for d, v in {**t["perplexity_by_domain"], "all": t["perplexity"]}.items():
                        rows[key].setdefault(d, []).append(v)
    lines = ["| model | params | code | prose | all |", "|---|---:|---:|---:|---:|"]
    params = results["params"]
    for model in sorted(rows, key=lambda m: (not m.startswith("teacher"), m)):
        cells = [_cell(rows[model].get(d, [])) for d in ("code", "prose", "all")]
        lines.append(f"| {model} | {params.get(model, '-')} | " + " | ".join(cells) + " |")
    c = results.get("cache")
    text = "## Test perplexity by domain\n\n" + "\n".join(lines) + "\n"
    if c:
        text += (f"\nToken cache (route_cache): top-{c['k']} + tail, {c['bytes_per_token']:.0f} bytes per token and "
                 f"teacher; KL(full || stored) {c['kl_mean']:.2e} nats per token on average (max {c['kl_max']:.2e}).\n")
    return text


def write_tables(results: dict, out: Path) -> None:
    corpus, seeds = results["corpus"], results["args"]["seeds"]
    took = f"; {results['seconds']:.0f} s" if "seconds" in results else ""
    header = (f"# Language models\n\nCorpus: code {corpus['code']['files']} files ({corpus['code']['bytes']:,} bytes), "
              f"prose {corpus['prose']['files']} files ({corpus['prose']['bytes']:,} bytes); student seeds "
              f"{', '.join(map(str, seeds))}{took}.\n\n")
    write_text(out / "lm.md", header + tables(results))


def report(out: Path) -> int:
    """lm.md from lm.json, keeping the seeds whose every variant finished (a run cut short by time)."""
    results = json.loads((out / "lm.json").read_text())
    done = [s for s, runs in results["runs"].items() if set(runs) == set(VARIANTS)]
    if len(done) < len(results["runs"]) or len(done) < len(results["args"]["seeds"]):
        results["unfinished_seeds"] = [s for s in results["args"]["seeds"] if str(s) not in done]
    results["runs"] = {s: results["runs"][s] for s in done}
    results["args"]["seeds"] = [int(s) for s in done]
    write_json(out / "lm.json", results)
    write_tables(results, out)
    print(tables(results))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600, help="student steps")
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--report", action="store_true",
                        help="only rewrite lm.md from lm.json, with the seeds whose every variant finished")
    args = parser.parse_args(argv)
    if args.report:
        return report(Path(args.out))
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    corpus = make_corpus() if not (CACHE / "tok").exists() else json.loads((CACHE / "corpus.json").read_text())
    if not (CACHE / "tok").exists():
        write_json(CACHE / "corpus.json", corpus)
        make_tokenizer()
    results = {"args": {"seeds": seeds, "steps": args.steps, "teacher_steps": args.teacher_steps,
                        "seq_len": SEQ_LEN, "vocab": VOCAB, "teacher": TEACHER, "student": STUDENT},
               "corpus": corpus, "runs": {}, "params": {}}
    for seed in seeds:
        files = experts(seed, args.teacher_steps)
        results["runs"][str(seed)] = {}
        for variant in args.variants.split(","):
            s = student(seed, variant, files, args.steps)
            results["runs"][str(seed)][variant] = s
            results["params"][f"student: {variant}"] = f"{s['student']['params']:,}"
            for t in s.get("teachers", []):
                results["params"][f"teacher: {t['name']}"] = f"{t['params']:,}"
            if "cache" in s:
                results["cache"] = s["cache"]
            write_json(Path(args.out) / "lm.json", results)  # after every run: a partial result survives
    results["seconds"] = round(time.time() - started, 1)
    write_json(Path(args.out) / "lm.json", results)
    write_tables(results, Path(args.out))
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
