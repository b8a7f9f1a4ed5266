"""Experiment tracking: every record written to ``metrics.jsonl`` also goes to TensorBoard
(always available) and, optionally, MLflow (``pip install 'mtkd[mlflow]'``).

Chosen with ``output.tracking`` (default ``[tensorboard]``; ``[]`` turns tracking off):

- ``tensorboard``: event files in ``RUN_DIR/tensorboard/<stage>/`` (one TensorBoard run per
  training stage: ``teacher/cnn``, ``scratch``, ``distill``, so their curves overlay), scalar tags
  named as in metrics.jsonl (``loss``, ``kd``, ``val_accuracy``, ``lr``, ``weight/<teacher>``),
  plus the final test metrics under ``summary``. View with ``tensorboard --logdir RUN_DIR/tensorboard``.
- ``mlflow``: one MLflow run per run directory (resumed runs continue it), the resolved config
  as parameters, metrics named ``<stage>/<key>``, the final test metrics, and report.md and
  summary.json as artifacts. The store is MLflow's own setting (``MLFLOW_TRACKING_URI``) unless
  ``output.mlflow_uri`` is given.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

from .config import flatten_config
from .errors import MtkdError
from .distributed import is_main
from .io import write_text


TRACKERS = ("tensorboard", "mlflow")
MLFLOW_HINT = "pip install 'mtkd[mlflow]'"


def _scalars(record: dict) -> dict[str, float]:
    """The numeric entries of a metrics record, except its stage and step."""
    return {k: float(v) for k, v in record.items()
            if k not in ("stage", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def final_metrics(summary: dict) -> dict[str, float]:
    """Test accuracy and ECE (language models: perplexity) of the student, the ensemble and the baseline."""
    out = {}
    for role in ("student", "ensemble", "scratch"):
        for key in ("accuracy", "ece", "perplexity"):  # perplexity: language models
            if summary.get(role, {}).get(key) is not None:
                out[f"test_{key}/{role}"] = float(summary[role][key])
    return out


TENSORBOARD_MISSING = ("output.tracking: 'tensorboard' needs the tensorboard package (pip install tensorboard), "
                       "or set output.tracking: [] to turn tracking off")


class TensorBoardTracker:
    """One ``SummaryWriter`` per training stage, created when the stage first logs."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MtkdError(TENSORBOARD_MISSING) from None
        self._writer_cls, self.log_dir = SummaryWriter, Path(log_dir)
        from .rundir import note_written

        note_written(self.log_dir / "events")  # TensorBoard writes there itself: listed in the run's marker
        self.writers: dict = {}

    def _writer(self, stage: str, purge_step: int | None = None):
        if stage not in self.writers or purge_step is not None:
            if stage in self.writers:
                self.writers[stage].close()
            # purge_step: a resumed stage hides the events it logged after its last checkpoint
            self.writers[stage] = self._writer_cls(log_dir=str(self.log_dir / stage), purge_step=purge_step)
        return self.writers[stage]

    def log(self, record: dict) -> None:
        values = _scalars(record)
        if values:
            writer = self._writer(str(record.get("stage", "train")))
            for key, value in values.items():
                writer.add_scalar(key, value, int(record.get("step", 0)))
            writer.flush()  # records come every log_every steps; a killed run keeps what it logged

    def truncate(self, stage: str, after_step: int) -> None:
        self._writer(stage, purge_step=after_step + 1)

    def finish(self, summary: dict, out: Path) -> None:
        writer = self._writer("summary")
        for key, value in final_metrics(summary).items():
            writer.add_scalar(key, value, 0)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


def _import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise MtkdError(f"output.tracking: 'mlflow' needs MLflow, which is an optional extra: {MLFLOW_HINT} "
                        "(or remove mlflow from output.tracking)") from None
    return mlflow


def _flat_params(obj) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in flatten_config(obj).items()}  # MLflow limits a parameter value's length


def _mlflow_client(uri: str | None):
    """An ``MlflowClient`` whose store answers; a one-line MtkdError otherwise (before any run starts)."""
    _import_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # an unreachable server, a store MLflow (or mlflow-skinny) cannot use, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MtkdError(f"output.tracking: MLflow cannot use the store {uri or 'of its default setting'} "
                        f"({type(exc).__name__}: {first[:200]}); set output.mlflow_uri (or MLFLOW_TRACKING_URI) "
                        "to a tracking server (http://...), or to file:./mlruns with MLFLOW_ALLOW_FILE_STORE=true, "
                        "or remove mlflow from output.tracking") from None
    return client


class MLflowTracker:
    """One MLflow run per run directory, through ``MlflowClient`` (no global active run, so it never
    interferes with a run the caller has open). Its id is kept in ``RUN_DIR/mlflow_run_id`` so a
    resumed run logs into the same MLflow run."""

    def __init__(self, out: Path, config: dict, uri: str | None = None, experiment: str = "mtkd"):

        self.client = client = _mlflow_client(uri)
        from mlflow.entities import Metric, Param

        self._metric, self.failed = Metric, False
        id_file = Path(out) / "mlflow_run_id"
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            client.update_run(self.run_id, status="RUNNING")
        else:
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(experiment)
            self.run_id = client.create_run(exp_id, run_name=Path(out).name).info.run_id
            write_text(id_file, self.run_id)
            params = _flat_params({k: v for k, v in config.items() if k != "output"})
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
                client.log_batch(self.run_id, params=items[i:i + 100])

    def _log(self, values: dict[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._metric(k, v, now, step) for k, v in values.items()])

    def log(self, record: dict) -> None:
        values = _scalars(record)
        if values and not self.failed:
            stage = str(record.get("stage", "train"))
            try:
                self._log({f"{stage}/{k}": v for k, v in values.items()}, int(record.get("step", 0)))
            except Exception as exc:  # tracking must not stop a long training run; metrics.jsonl has it all
                self.failed = True
                print(f"mtkd: warning: MLflow logging failed ({type(exc).__name__}: {str(exc)[:200]}); "
                      "training goes on, metrics.jsonl keeps every record", file=sys.stderr)

    def truncate(self, stage: str, after_step: int) -> None:
        pass  # MLflow keeps every logged value; a resumed stage logs its later steps again

    def finish(self, summary: dict, out: Path) -> None:
        if self.failed:
            return
        self._log(final_metrics(summary), 0)
        for name in ("report.md", "summary.json"):
            if (Path(out) / name).is_file():
                self.client.log_artifact(self.run_id, str(Path(out) / name))
        self.client.set_terminated(self.run_id)

    def close(self) -> None:
        pass


def check_trackers(names: list[str], mlflow_uri: str | None = None) -> None:
    """Fail before a run starts if a chosen tracker's package is missing or its store does not answer."""
    if "mlflow" in names:
        _mlflow_client(mlflow_uri)
    if "tensorboard" in names:
        if importlib.util.find_spec("tensorboard") is None:
            raise MtkdError(TENSORBOARD_MISSING)


def make_trackers(names: list[str], out: Path, config: dict, mlflow_uri: str | None = None) -> list:
    """The trackers ``names`` asks for; none on a process other than rank 0 of a torchrun job."""

    trackers: list = []
    if not is_main():
        return trackers
    for name in dict.fromkeys(names):  # each once, in the given order
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(Path(out) / "tensorboard"))
        elif name == "mlflow":
            trackers.append(MLflowTracker(out, config, mlflow_uri))
        else:
            raise MtkdError(f"output.tracking: unknown tracker {name!r}; choose from: {', '.join(TRACKERS)}")
    return trackers
