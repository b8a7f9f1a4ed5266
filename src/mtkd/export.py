"""Export a student to ONNX or TorchScript, check it, and time it against the teacher ensemble.

    from mtkd.export import export_student
    result = export_student("runs/demo", "onnx")   # writes runs/demo/student.onnx

The exported model is run (onnxruntime, or ``torch.jit.load``) on test inputs and its outputs
are compared with PyTorch's before anything is written: a file that does not reproduce the
student is refused, never written. Files are written atomically.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import MtkdError, first_line
from .io import _atomic
from .config import parse_config
from .models.files import load_model_file
from .teachers.kinds import load_external
from .schema import validate as _validate
from .data import DATASETS, load_data
from .evaluation import ms_per_1000, ms_per_1000_of
from .models import count_params
from .io import write_json


FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
ONNX_HINT = "pip install 'mtkd[onnx]'"


def _onnx_session(data: bytes):
    try:
        import onnxruntime as ort
    except ImportError:
        raise MtkdError(f"checking and timing an ONNX export needs onnxruntime; {ONNX_HINT}") from None
    options = ort.SessionOptions()
    # the same thread count as torch, so the latency comparison is fair
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _to_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    if importlib.util.find_spec("onnx") is None:  # the exporter needs it
        raise MtkdError(f"ONNX export needs the onnx package; {ONNX_HINT}")
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter warns that it is not the default any more
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the output check below is what counts
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def _to_torchscript(model: nn.Module, example: torch.Tensor) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            scripted = torch.jit.script(model)  # keeps control flow; any batch size
        except Exception:  # not scriptable: trace it; the output check below catches a bad trace
            scripted = torch.jit.trace(model, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def load_exported(data: bytes, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function x [N, ...] -> logits [N, C] (CPU tensors) running the exported model."""
    if fmt == "onnx":
        session = _onnx_session(data)
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().float().numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    module.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)
    return run


def max_abs_diff(run: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor,
                 batch_size: int = 1000) -> float:
    """Largest |exported - PyTorch| over the logits of every input in ``x`` (batches of ``batch_size``,
    then one single-sample batch, so a fixed batch size in the export would be caught)."""
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            worst = max(worst, float((run(xb).float() - model(xb).float()).abs().max()))
        worst = max(worst, float((run(x[:1]).float() - model(x[:1]).float()).abs().max()))
    return worst


def export_model(model: nn.Module, x: torch.Tensor, path: str | Path, fmt: str = "onnx",
                 tolerance: float = 1e-4) -> dict:
    """Export ``model`` (CPU, eval mode) to ``path`` in ``fmt`` ("onnx" or "torchscript").

    x: inputs [N, ...] to check on (e.g. the test split). The exported model must reproduce
    PyTorch's logits within ``tolerance`` * max(1, max |logit|); otherwise MtkdError and no file.
    Returns {"path", "format", "bytes", "max_abs_diff", "checked_inputs", "tolerance"}."""

    if fmt not in FORMATS:
        raise MtkdError(f"export format {fmt!r} is not supported; choose one of: {', '.join(FORMATS)}")
    if len(x) == 0:
        raise MtkdError("export needs at least one input to check the exported model on")
    if not tolerance > 0:
        raise MtkdError(f"--tolerance must be a positive number (got {tolerance})")
    model = model.cpu().eval()
    x = x.cpu()
    example = x[:2]
    try:
        data = _to_onnx(model, example) if fmt == "onnx" else _to_torchscript(model, example)
    except MtkdError:
        raise
    except Exception as exc:
        raise MtkdError(f"the model could not be exported to {fmt} ({type(exc).__name__}: {first_line(exc)})"
                        f"; try the other format") from None
    with torch.no_grad():
        scale = max(1.0, float(model(x[:1000]).abs().max()))
    diff = max_abs_diff(load_exported(data, fmt), model, x)
    if not diff <= tolerance * scale:  # also catches NaN
        raise MtkdError(f"the {fmt} export does not reproduce the model: its logits differ from PyTorch's by up to "
                        f"{diff:.3g} on {len(x):,} inputs (allowed {tolerance * scale:.3g}); nothing was written")
    _atomic(path, lambda h: h.write(data), "wb")
    return {"path": str(path), "format": fmt, "bytes": len(data), "max_abs_diff": diff,
            "checked_inputs": len(x), "tolerance": tolerance * scale}


def _run_models(run_dir: Path, config: dict, data, allow_code: bool = False) -> tuple[nn.Module, list[nn.Module], list[str]]:
    """The student and the teachers a finished run used (teachers/ in the run, their checkpoints,
    or, for a teacher with a ``kind:``, its ONNX / scikit-learn / TorchScript / ... file)."""

    student, _ = load_model_file(run_dir / "student.pt")
    teachers, missing = [], []
    entries = config.get("teachers") or []
    if (run_dir / "summary.json").is_file():  # only the teachers the run used (none for recipe scratch)
        used = {t.get("name") for t in json.loads((run_dir / "summary.json").read_text()).get("teachers", [])}
        entries = [t for t in entries if t.get("name") in used]
    for t in entries:
        if t.get("kind"):  # a teacher read from a file (ONNX, scikit-learn, ...), as the run loaded it
            # a run directory may come from someone else: its config's opt-in does not count, only this
            # command's --allow-code does
            t = {k: v for k, v in t.items() if k not in ("allow_code", "allow_pickle")}
            if allow_code:
                t["allow_code"] = True
            try:  # its file may have moved since
                spec = parse_config({**config, "teachers": [t]}).teachers[0]
                teachers.append(load_external(spec, data).eval())
            except MtkdError:
                missing.append(str(t.get("name")))
            continue
        candidates = [run_dir / "teachers" / f"{t.get('name')}.pt"]
        if t.get("checkpoint"):
            candidates.append(Path(t["checkpoint"]))
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            missing.append(str(t.get("name")))
            continue
        try:
            teachers.append(load_model_file(found)[0].eval())
        except MtkdError:
            missing.append(str(t.get("name")))
    return student.eval(), teachers, missing


def _run_data(config: dict):

    raw = dict(config.get("data") or {})
    name = raw.get("name", "mnist1d")
    if name not in DATASETS:
        raise MtkdError(f"the run's data set {name!r} is not a built-in one; use mtkd.export.export_model "
                        "with your own inputs")
    if name == "mnist1d":
        raw["unlabeled"] = 0  # the pool comes from another generator seed; the test split is the same without it
    return load_data(_validate(DATASETS[name].config, raw, "data", f"data set '{name}'"))


def export_student(run_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                   tolerance: float = 1e-4, latency: bool = True, allow_code: bool = False,
                   overwrite: bool = False) -> dict:
    """Export the student of the finished run in ``run_dir``; check it on the run's test split
    and time it, the PyTorch student and the teacher ensemble (ms per 1,000 examples, one batch
    of up to 1,000, median of 20 passes, ``torch.get_num_threads()`` threads).

    Writes the model to ``out`` (default ``run_dir/student.onnx`` or ``student.torchscript.pt``)
    and the result dict as JSON beside it (``<out>.json``); returns the dict. Inside the run
    directory mtkd replaces only files its marker lists; elsewhere an existing file is replaced
    only with ``overwrite``. Teachers whose files run code load only with ``allow_code``."""
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise MtkdError(f"--format {fmt!r}: choose one of: {', '.join(FORMATS)}")
    if not (run_dir / "student.pt").is_file() or not (run_dir / "config.yaml").is_file():
        raise MtkdError(f"{run_dir} is not a finished mtkd run directory (no student.pt or config.yaml); "
                        "give a directory written by `mtkd run` or `mtkd demo`")
    out = Path(out) if out else run_dir
    if out.is_dir() and not out.is_symlink():
        out = out / f"student{FORMATS[fmt]}"
    from . import rundir
    from .safe_yaml import load_yaml_text

    inside = Path(os.path.realpath(out.parent)) == Path(os.path.realpath(run_dir))
    held = None
    if inside:  # the run's own directory: only its marker's entries are mtkd's
        held, _ = rundir.claim(run_dir, "run")
    try:
        for path in (out, Path(f"{out}.json")):
            if not (inside and path.name in held.entries):
                rundir.check_new_file(path, overwrite)
        config = load_yaml_text((run_dir / "config.yaml").read_text(errors="replace"), run_dir / "config.yaml")
        config = config if isinstance(config, dict) else {}
        if (config.get("data") or {}).get("name") == "text":
            raise MtkdError(f"{run_dir} is a language-model run: exporting its student to {fmt} is not supported yet; "
                            "use student.pt (mtkd.load_student) in PyTorch")
        data = _run_data(config)
        student, teachers, missing = _run_models(run_dir, config, data, allow_code)
        x = data.test.x
        if getattr(x, "decoded_on_read", False):  # data.workers: images kept encoded until read
            x = x[:]
        from .student import load_student

        usable = load_student(run_dir)  # class names and the run's preprocessing
        if usable.prep is not None:
            from .data.preprocess import RawInputs

            # the exported model takes raw columns and applies the missing-value filling and the
            # normalisation itself; it is checked end to end on the test rows as raw columns
            student = usable
            with torch.no_grad():
                x = RawInputs(usable.preprocessing)(x)
        result = _export_and_time(student, usable, teachers, missing, x, out, fmt, tolerance, latency)
    finally:
        if held is not None:
            held.release()
    return result


def _export_and_time(student, usable, teachers, missing, x, out: Path, fmt: str, tolerance: float,
                     latency: bool) -> dict:
    result = export_model(student, x, out, fmt, tolerance)
    result["params"] = count_params(usable.model)
    result["classes"] = usable.classes
    if usable.preprocessing is not None:
        result["inputs"] = {"columns": usable.columns,
                            "preprocess": usable.preprocessing.to_dict(),
                            "included_in_model": usable.prep is not None}
    if latency:
        run = load_exported(out.read_bytes(), fmt)
        timing = {"exported": ms_per_1000_of(run, x, repeats=20),
                  "pytorch_student": ms_per_1000([student], x, repeats=20)}
        if teachers and not missing:
            timing["ensemble"] = ms_per_1000(teachers, x, repeats=20)
            timing["teachers"] = len(teachers)
        elif missing:
            timing["ensemble_missing"] = missing  # teacher files not found: no ensemble timing
        timing["threads"] = torch.get_num_threads()
        result["ms_per_1000"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in timing.items()}
    write_json(Path(f"{out}.json"), result)
    return result


def format_result(result: dict) -> str:
    """Lines printed by ``mtkd export``."""
    fmt = result["format"]
    lines = [f"exported the student ({result['params']:,} parameters) to {result['path']} ({result['bytes'] / 1024:.0f} KiB)",
             f"check: max |{fmt} - pytorch| = {result['max_abs_diff']:.2e} on {result['checked_inputs']:,} test inputs "
             f"(allowed {result['tolerance']:.1e}): ok"]
    t = result.get("ms_per_1000")
    if t:
        line = (f"latency, ms per 1,000 examples (batch of up to 1,000, {t['threads']} thread(s)): {fmt} {t['exported']:.3f}, "
                f"pytorch student {t['pytorch_student']:.3f}")
        if "ensemble" in t:
            line += (f", ensemble of {t['teachers']} teachers {t['ensemble']:.3f} "
                     f"({t['ensemble'] / max(t['exported'], 1e-9):.0f} times the exported student's)")
        elif t.get("ensemble_missing"):
            line += f"; ensemble not timed (teachers not loadable: {', '.join(t['ensemble_missing'])})"
        lines.append(line)
    lines.append(f"details: {result['path']}.json")
    return "\n".join(lines)


__all__ = ["FORMATS", "export_model", "export_student", "format_result", "load_exported"]
