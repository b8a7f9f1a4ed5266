"""Option schemas shared by every component (training settings, the ``distill`` and
``output`` sections, a teacher's spec), in a leaf module: it imports nothing of mtkd, so data
sets, models, aggregators, recipes and the trainer declare or read options without importing
the config loader (which imports all of them)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NoOptions(BaseModel):
    """Options schema of a component that takes none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TrainConfig(BaseModel):
    """How one network is trained; a teacher's ``train:`` and the ``distill`` section share these keys."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    steps: int = Field(3000, gt=0, description="optimizer steps")
    batch_size: int = Field(100, gt=0)
    lr: float = Field(1e-2, gt=0, description="peak learning rate")
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0, description="linear warm-up before the schedule")
    eval_every: int = Field(500, gt=0, description="validation accuracy every N steps")
    log_every: int = Field(50, gt=0, description="a metrics.jsonl record every N steps")
    checkpoint_every: int = Field(500, gt=0, description="save the resumable checkpoint every N steps")
    save_every: int = Field(0, ge=0, description="also keep the weights every N steps (the training trajectory, "
                            "e.g. for recipe progressive); 0 = off")


class DistillConfig(TrainConfig):
    recipe: str = Field("offline", description="training scheme, see `mtkd list`")
    aggregator: str = Field("mean", description="how teacher outputs become one target")
    temperature: float = Field(4.0, gt=0, description="softmax temperature T of the KD loss")
    alpha: float = Field(0.9, ge=0, le=1, description="loss = (1 - alpha) * CE + alpha * KD")
    baseline: bool = Field(False, description="also train the student from scratch, for comparison")
    on_teacher_error: Literal["stop", "drop"] = Field(
        "stop", description="a teacher that fails on a batch: stop the run, or drop it for that batch and record it")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(1, ge=0, le=1024, description="torch CPU threads (0 = torch's default)")
    # performance (see docs/methods/caching.md); none of these change what is computed beyond
    # float rounding, except cache_storage float16/topk, whose error the cache build reports
    cache: Literal["off", "auto", "always"] = Field(
        "off", description="teacher-output cache: auto = for recipes that allow it, always = or fail")
    cache_dir: Path | None = Field(None, description="where cache entries live (default: <run dir>/teacher_cache)")
    cache_storage: Literal["float32", "float16", "topk"] = Field(
        "float32", description="stored teacher logits: all in float32/float16, or top-k log-probs + tail mass")
    cache_topk: int = Field(0, ge=0, description="classes kept per sample with cache_storage: topk")
    cache_views: int = Field(0, ge=0, description="with data.augment: augmented views recorded per sample, each with "
                             "every teacher's output; training reads one of them per sample (0 = no view cache)")
    amp: Literal["off", "bf16", "fp16"] = Field(
        "off", description="mixed precision autocast for teachers and student (fp16 on CUDA only)")
    monitor_every: int = Field(0, ge=0, description="every N steps the teachers score the student on the validation "
                               "split (agreement with each teacher and the ensemble); 0 = off")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp = DistributedDataParallel (a full student per process), fsdp = FSDP2 "
        "fully_shard (the student's parameters, gradients and optimizer state split over processes)")
    sync_batchnorm: bool = Field(False, description="under torchrun: the student's BatchNorm layers use the whole "
                                 "global batch's statistics (nn.SyncBatchNorm; CUDA only)")
    sharded_checkpoints: bool = Field(False, description="with parallel: fsdp, each process writes its own shards "
                                      "of the student and optimizer (torch.distributed.checkpoint), nothing gathered; "
                                      "off: consolidated checkpoints in the one-process format")
    teachers_on_device: int = Field(0, ge=0, description="teachers that do not fit beside the student: at most N "
                                    "of them on the compute device at once, the others in CPU memory, moved in turn "
                                    "for each batch (0 = every teacher stays on the device)")
    compile: bool = Field(False, description="torch.compile the student's forward (needs a C++ compiler on the CPU)")
    channels_last: bool = Field(False, description="convolutional students on images: weights and input batches in "
                                "channels-last memory format (faster convolutions on GPUs)")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    dir: Path = Field(Path("runs/mtkd"), description="run directory (the CLI's --out wins)")
    plots: bool = True
    tracking: list[Literal["tensorboard", "mlflow"]] = Field(
        ["tensorboard"], description="experiment trackers that receive every metrics record ([] for none)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: MLflow's own, MLFLOW_TRACKING_URI)")


@dataclass
class TeacherSpec:
    name: str
    model: BaseModel | None  # built-in arch config, or None when the checkpoint carries it
    checkpoint: Path | None
    weight: float
    train: TrainConfig
    external: BaseModel | None = None  # options of a teacher with a 'kind:' (ONNX, scikit-learn, ...)
    device: str | None = None  # 'cpu', 'cuda' or 'cuda:N': where this teacher runs (None: beside the student)
