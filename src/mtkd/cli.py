"""Command line: ``mtkd demo | run | list``. Thin: parse, validate, call the pipeline.

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
        self.exit(EXIT_USAGE, f"mtkd: error: {message} (see mtkd {self.prog.split()[-1]} --help)\n")


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
    run.add_argument("config", type=Path, help="YAML config file")
    run.add_argument("--out", type=Path, help="run directory (default: the config's output.dir)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set distill.steps=1000 (repeatable)")
    run.add_argument("--restart", action="store_true", help="start over instead of resuming")
    run.add_argument("--force", action="store_true", help="resume even if the config or mtkd version changed")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    sub.add_parser("list", help="list built-in data sets, models, aggregators, losses and recipes")
    return parser


def _run(cfg, out: Path, restart: bool, progress: bool, force: bool = False) -> None:
    from .pipeline import run_pipeline
    from .report import format_table

    start = time.perf_counter()
    summary = run_pipeline(cfg, out, restart=restart, progress=progress, log=lambda m: print(m, file=sys.stderr),
                           force=force)
    if not summary:  # a torchrun process other than rank 0: rank 0 prints
        return
    print(format_table(summary))
    print(f"\nrun directory: {out}  ({time.perf_counter() - start:.0f} s; report: {out / 'report.md'})")


def cmd_list() -> None:
    from .aggregation import AGGREGATORS
    from .data import DATASETS
    from .losses import LOSSES
    from .models import MODELS
    from .recipes import RECIPES

    def keys(schema, skip=("name", "arch", "num_classes")) -> str:
        names = [k for k in schema.model_fields if k not in skip]
        return f" [keys: {', '.join(names)}]" if names else ""

    groups = [
        ("data sets", {k: v.description + keys(v.config) for k, v in DATASETS.items()}),
        ("models", {k: v.description + keys(v.config) for k, v in MODELS.items()}),
        ("aggregators", {k: v.description + keys(v.Options) for k, v in AGGREGATORS.items()}),
        ("losses", {k: v[1] for k, v in LOSSES.items()}),
        ("recipes", {k: v.description + keys(v.Options) for k, v in RECIPES.items()}),
    ]
    for title, entries in groups:
        print(f"{title}:")
        width = max(len(k) for k in entries)
        for name, text in entries.items():
            print(f"  {name.ljust(width)}  {text}")


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "list":
            cmd_list()
        elif args.command == "demo":
            from .config import parse_config
            from .demo import demo_config

            cfg = parse_config(demo_config(args.fast))
            _run(cfg, args.out or cfg.output.dir, args.restart, not args.no_progress, args.force)
        elif args.command == "run":
            from .config import load_config

            cfg = load_config(args.config, args.overrides)
            _run(cfg, args.out or cfg.output.dir, args.restart, not args.no_progress, args.force)
    except MtkdError as exc:
        print(f"mtkd: error: {exc}", file=sys.stderr)
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
