"""Command line: ``mtkd demo | run | select | cache | bench | list | report | export | predict``. Thin: parse, validate, call the pipeline.

Errors in the config or on the command line print one line and exit with status 2,
before anything is written.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import MtkdError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, status 2
        self.exit(EXIT_USAGE, f"mtkd: error: {message} (see {self.prog} --help)\n")


def _config_arguments(parser: argparse.ArgumentParser, help: str = "YAML config file") -> None:
    """The config file and its --set overrides, as every command that reads a config takes them."""
    parser.add_argument("config", type=Path, help=help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value, e.g. --set distill.steps=1000 (repeatable)")


def _allow_code(parser: argparse.ArgumentParser) -> None:
    """The one opt-in for loading files whose loading runs code (pickles, TorchScript, Hugging Face
    ``.bin`` weights); ``--allow-pickle`` is its older name."""
    parser.add_argument("--allow-code", "--allow-pickle", dest="allow_code", action="store_true",
                        help="let teachers load files that run code when loaded (pickled estimators, TorchScript, "
                             "Hugging Face .bin weights): only for files you trust")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtkd", description="Multi-teacher knowledge distillation: many models into one.")
    parser.add_argument("--version", action="version", version=f"mtkd {__import__('mtkd').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train 3 teachers on MNIST-1D and distill them into an MLP")
    demo.add_argument("--out", type=Path, help="run directory (default runs/demo, or runs/demo-fast)")
    demo.add_argument("--fast", action="store_true", help="a smaller run, under a minute (smoke test)")
    demo.add_argument("--restart", action="store_true", help="start over instead of resuming")
    demo.add_argument("--force", action="store_true", help="resume even if the config or mtkd version changed")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = sub.add_parser("run", help="run the pipeline a YAML config describes")
    _config_arguments(run)
    run.add_argument("--out", type=Path, help="run directory (default: the config's output.dir)")
    run.add_argument("--restart", action="store_true", help="start over instead of resuming")
    run.add_argument("--force", action="store_true", help="resume even if the config or mtkd version changed")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _allow_code(run)

    select = sub.add_parser("select", help="choose the subset of a config's teachers that best serves distillation")
    _config_arguments(select, "YAML config whose teachers are trained (checkpoint or kind)")
    select.add_argument("--out", type=Path, help="config file to write (default: CONFIG-selected.yaml)")
    select.add_argument("--max", dest="max_teachers", type=int, help="keep at most N teachers")
    select.add_argument("--diversity", type=float, default=0.1,
                        help="weight of the disagreement term in the score (default 0.1)")
    select.add_argument("--accuracy-floor", type=float, default=0.8,
                        help="a teacher alone must reach this fraction of the ensemble's accuracy (default 0.8)")
    select.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    _allow_code(select)

    cache = sub.add_parser("cache", help="compute every teacher's outputs once and store them (teacher cache)")
    _config_arguments(cache)
    cache.add_argument("--out", type=Path, help="run directory (default: the config's output.dir)")
    cache.add_argument("--force", action="store_true", help="use the run directory even if its config changed")
    cache.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _allow_code(cache)

    bench = sub.add_parser("bench", help="throughput benchmark: live and cached teachers, K = 1..8")
    from .bench import add_arguments

    add_arguments(bench)

    lst = sub.add_parser("list", help="list built-in data sets, models, aggregators, losses and recipes")
    lst.add_argument("--models", choices=["timm", "torchvision"], metavar="SOURCE",
                     help="instead, list the models an installed library offers (timm or torchvision)")

    report = sub.add_parser("report", help="compare finished runs side by side (mean ± std over seeds)")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="finished run directories")
    report.add_argument("--out", type=Path, default=Path("runs/report"),
                        help="where report.md, comparison.json and plots go (default runs/report)")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    _allow_code(report)  # accepted for uniformity: a report reads only JSON and YAML, never model files

    export = sub.add_parser("export", help="export a run's student to ONNX or TorchScript, checked and timed")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default onnx")
    export.add_argument("--out", type=Path, help="output file (default RUN_DIR/student.onnx or student.torchscript.pt)")
    export.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |exported - pytorch| logit difference, relative to max(1, max |logit|)")
    export.add_argument("--threads", type=int, default=1, help="torch and onnxruntime CPU threads for the timing (default 1)")
    export.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists")
    _allow_code(export)

    predict = sub.add_parser("predict", help="predict with a run's student: one row per input row, class names "
                                             "and probabilities")
    predict.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run directory (or a student.pt)")
    predict.add_argument("input", type=Path, metavar="INPUT", help="a .csv file with a header (the training "
                         "file's feature columns, by name) or an .npz file (array x)")
    predict.add_argument("--out", type=Path, required=True, help="CSV file to write: prediction, p_<class> ...")
    predict.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser


def cmd_predict(run_dir: Path, input_path: Path, out: Path, force: bool) -> None:
    from .student import load_student, read_inputs, write_predictions

    if out.exists() and not force:
        raise MtkdError(f"--out {out} exists; choose another file, or add --force to overwrite it")
    if out.is_dir():
        raise MtkdError(f"--out {out} is a directory; give a file name such as predictions.csv")
    student = load_student(run_dir)
    n = write_predictions(student, read_inputs(input_path, student), out)
    print(f"wrote {n} prediction(s) of {len(student.classes)} classes to {out}")


def _run(cfg, out: Path, restart: bool, progress: bool, force: bool = False) -> None:
    from .pipeline import run_pipeline
    from .report import format_table

    from . import distributed

    start = time.perf_counter()
    try:
        summary = run_pipeline(cfg, out, restart=restart, progress=progress,
                               log=lambda m: print(m, file=sys.stderr), force=force)
    finally:
        main_process = distributed.is_main()
        distributed.shutdown()  # under torchrun: leave the process group cleanly
    if not main_process:
        return
    if summary.get("task") == "language_model":
        from .report.language_model import lm_table

        print(lm_table(summary))
    else:
        print(format_table(summary))
    print(f"\nrun directory: {out}  ({time.perf_counter() - start:.0f} s; report: {out / 'report.md'})")


def cmd_list() -> None:
    from .aggregation import AGGREGATORS
    from .data import DATASETS
    from .losses import LOSSES
    from .models import MODELS
    from .models.sources import SOURCES
    from .recipes import RECIPES
    from .teachers.kinds import TEACHER_KINDS

    def keys(schema, skip=("name", "arch", "num_classes")) -> str:
        names = [k for k in schema.model_fields if k not in skip]
        return f" [keys: {', '.join(names)}]" if names else ""

    groups = [
        ("data sets", {k: v.description + keys(v.config) for k, v in DATASETS.items()}),
        ("models", {k: v.description + keys(v.config) for k, v in MODELS.items()}),
        ("model sources (arch: SOURCE:NAME; keys: weights, options, pretrained, input, head)",
         {f"{k}:": v for k, v in SOURCES.items()}),
        ("aggregators", {k: v.description + keys(v.Options) for k, v in AGGREGATORS.items()}),
        ("losses", {k: v[1] for k, v in LOSSES.items()}),
        ("recipes", {k: v.description + keys(v.Options) for k, v in RECIPES.items()}),
        ("teacher kinds", {k: v.description + keys(v.Options, ("kind",)) for k, v in TEACHER_KINDS.items()}),
    ]
    for title, entries in groups:
        print(f"{title}:")
        width = max(len(k) for k in entries)
        for name, text in entries.items():
            print(f"  {name.ljust(width)}  {text}")


def _terminate(signum, frame):
    """SIGTERM (a scheduler or `kill` stopping the job) unwinds like Ctrl-C: every atomic write in
    progress removes its temporary file, and the run resumes from its last checkpoint."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    parser = _build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `mtkd`: what it can do, not an error line
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _main(args)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args) -> int:
    try:
        if args.command == "list" and args.models:
            from .models.sources import list_library

            print("\n".join(list_library(args.models)))
        elif args.command == "list":
            cmd_list()
        elif args.command == "demo":
            from .config import parse_config
            from .demo import demo_config

            cfg = parse_config(demo_config(args.fast))
            _run(cfg, args.out or cfg.output.dir, args.restart, not args.no_progress, args.force)
        elif args.command == "predict":
            cmd_predict(args.run_dir, args.input, args.out, args.force)
        elif args.command == "report":
            from .report.compare import compare_runs

            compare_runs(args.run_dirs, args.out, plots=not args.no_plots)
            print(f"compared {len(args.run_dirs)} run(s): {args.out / 'report.md'}")
        elif args.command == "export":
            import torch

            from .export import export_student, format_result

            from .limits import check_threads

            check_threads(args.threads, "--threads")
            if args.threads > 0:
                torch.set_num_threads(args.threads)
            print(format_result(export_student(args.run_dir, args.format, args.out, args.tolerance,
                                               allow_code=args.allow_code, overwrite=args.overwrite)))
        elif args.command == "cache":
            from .cache.command import cache_command
            from .config import load_config

            cfg = load_config(args.config, args.overrides)
            if args.allow_code:
                from .teachers.kinds import allow_code

                allow_code(cfg)

            def log(message: str) -> None:  # each entry's built/reused line is printed once, below
                if not message.startswith(("teacher cache: built", "teacher cache: reusing")):
                    print(message, file=sys.stderr)

            rows = cache_command(cfg, args.out or cfg.output.dir, not args.no_progress, log, args.force)
            for r in rows:
                err = r.get("topk_error")
                extra = f", top-k KL {err['kl_mean']:.2e}, top-1 agreement {err['top1_agreement']:.4f}" if err else ""
                print(f"{r['teacher']}: {'built' if r['built'] else 'reused'} {r['entry']} "
                      f"({r['samples']} samples, {r['storage']}, {r['mib']} MiB, {r['seconds']} s{extra})")
        elif args.command == "bench":
            from .bench import main as bench_main

            bench_main(args)
        elif args.command == "select":
            from .selection import select_from_config

            if args.max_teachers is not None and args.max_teachers < 1:
                raise MtkdError(f"--max {args.max_teachers}: keep at least 1 teacher")
            if not args.diversity >= 0:
                raise MtkdError(f"--diversity {args.diversity}: a non-negative number")
            if not 0 <= args.accuracy_floor <= 1:
                raise MtkdError(f"--accuracy-floor {args.accuracy_floor}: a fraction in [0, 1]")
            select_from_config(args.config, args.overrides, args.out, args.max_teachers, args.diversity,
                               args.allow_code, accuracy_floor=args.accuracy_floor, overwrite=args.overwrite)
        elif args.command == "run":
            from .config import load_config

            cfg = load_config(args.config, args.overrides)
            if args.allow_code:
                from .teachers.kinds import allow_code

                allow_code(cfg)
            _run(cfg, args.out or cfg.output.dir, args.restart, not args.no_progress, args.force)
    except MtkdError as exc:  # one line, whatever a library put into the message
        print(f"mtkd: error: {' '.join(str(exc).split())[:1000]}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. the disk filled up while writing; files are written atomically
        print(f"mtkd: error: {exc}; files already written are intact, run the same command again "
              "to resume from the last checkpoint", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mtkd: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
