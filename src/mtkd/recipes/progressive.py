"""Progressive distillation: the student follows the teachers' training trajectories.

Rezagholizadeh, Jafari, Salad, Sharma, Pasand and Ghodsi, "Pro-KD: Progressive Distillation by
Following the Footsteps of the Teacher", COLING 2022 (arXiv:2110.08532): instead of distilling
from the converged teacher only, the student distills from the teacher's checkpoints in the
order they were saved while the teacher trained, so its targets start easy (an early, smooth
teacher) and sharpen as it goes (mitigating the capacity gap and the "which checkpoint is the
best teacher" search). The temperature is annealed along the way, from ``distill.temperature``
for the first checkpoint down to ``final_temperature`` (1 by default) for the last one. Caveat:
the full text of the paper was not at hand when this was written; the schedule follows the
authors' Annealing-KD (Jafari, Rezagholizadeh, Sharma and Ghodsi, EACL 2021), on which Pro-KD
builds, where the temperature steps down from a maximum to 1 (here linearly, once per
checkpoint); ``temperature_schedule: constant`` keeps ``distill.temperature`` throughout:

    phase p = 0 .. P-1 (P = the number of checkpoints; equal shares of distill.steps)
    T_p     = T_max + (T_final - T_max) * p / (P - 1)
    loss    = (1 - alpha) * CE(student, y) + alpha * T_p^2 * KL(aggregate_{T_p}(teachers at checkpoint p) || student_{T_p})

Shi et al., "Follow Your Path: a Progressive Method for Knowledge Distillation" (ECML-PKDD
2021, ProKT) motivate the same idea: intermediate, "local" targets along the teacher's path are
easier to fit than the converged teacher. (ProKT also changes how the teacher trains, which this
recipe does not: the teachers here are trained normally, only their checkpoints are followed.)

Checkpoints: the pipeline keeps each teacher's weights every ``teachers[i].train.save_every``
steps in ``teachers/<name>/step-NNNNNN.pt`` (by default ``checkpoints`` of them over its
training); a teacher given as ``checkpoint: path/name.pt`` needs its checkpoints in
``path/name/step-*.pt``. With teachers of different checkpoint counts, each teacher's index is
scaled to the phase. The phase follows from the recipe's step count (``steps_done``, saved in
the checkpoint), so a resumed run continues on the same checkpoint with the same temperature.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Literal, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..io import load_torch
from ..losses import ce_loss
from ..teachers import FrozenTeacher
from .base import PreparedTeachers, TeacherStage, Traits, TrainedTeacher
from .offline import TeacherTargets


class ProgressiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    checkpoints: int = Field(10, ge=1, description="checkpoints kept while the pipeline trains each teacher "
                                                   "(teachers[i].train.save_every overrides)")
    # not "schedule": distill.schedule is the learning-rate schedule, which would take the key
    temperature_schedule: Literal["anneal", "constant"] = Field(
        "anneal", description="anneal: temperature from distill.temperature down to final_temperature; constant: "
                              "distill.temperature throughout")
    final_temperature: float = Field(1.0, gt=0, description="temperature at the last checkpoint (temperature_schedule: anneal)")


def phase_of(step: int, total_steps: int, phases: int) -> int:
    """Phase 0 .. phases-1 of optimizer step ``step`` (0-based) when ``total_steps`` are split equally."""
    return min(phases - 1, step * phases // max(1, total_steps))


def checkpoint_index(phase: int, phases: int, count: int) -> int:
    """Which of a teacher's ``count`` checkpoints serves in ``phase`` (of ``phases``)."""
    return min(count - 1, phase * count // phases)


def annealed_temperature(phase: int, phases: int, start: float, end: float) -> float:
    """Linear from ``start`` (phase 0) to ``end`` (the last phase)."""
    if phases <= 1:
        return start
    return start + (end - start) * phase / (phases - 1)


def load_trajectory(folder: str | Path, model: nn.Module) -> list[nn.Module]:
    """The checkpoints ``folder/step-*.pt`` (weights saved by the trainer's ``save_every``), in
    step order, each loaded into a copy of ``model`` (the trained teacher, for its architecture)."""
    return load_trajectory_files(sorted(Path(folder).glob("step-*.pt")), model)


def load_trajectory_files(paths: Sequence[Path], model: nn.Module) -> list[nn.Module]:
    """Each checkpoint file of ``paths`` (in order) loaded into a copy of ``model``."""
    out = []
    for path in paths:
        m = copy.deepcopy(model)
        m.load_state_dict(load_torch(path))
        out.append(m)
    return out


def _trajectory_folder(spec) -> Path:
    return spec.checkpoint.with_suffix("")  # runs/a/teachers/cnn.pt -> runs/a/teachers/cnn/


class ProgressiveRecipe(nn.Module):
    description = "Pro-KD: follow each teacher's training checkpoints in order, temperature annealed to 1"
    traits = Traits(needs_teachers=True, uses_aggregator=True, uses_unlabeled=True, prepares_teachers=True,
                    checks_config=True)
    Options = ProgressiveOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: ProgressiveOptions | None = None,
                 trajectories: Mapping[str, Sequence[nn.Module]] | None = None, steps: int = 1,
                 on_teacher_error: str = "stop"):
        super().__init__()
        self.options = options or ProgressiveOptions()
        if not trajectories or any(not trajectories.get(t.name) for t in teachers):
            missing = [t.name for t in teachers if not (trajectories or {}).get(t.name)]
            raise ConfigError(f"recipe 'progressive' needs the checkpoints each teacher saved while it trained; "
                              f"none for {missing} (train it with train.save_every, or pass trajectories=)")
        self.student, self.aggregator, self.teachers = student, aggregator, list(teachers)
        # temperature: the one in use at this step (read by aggregators such as meta), set from the schedule
        self.max_temperature = self.temperature = temperature
        self.alpha, self.total_steps = alpha, steps
        # teachers, aggregator, fault policy, the aggregator's view of the student (feature hook, look-ahead)
        self.targets = TeacherTargets(teachers, aggregator, student, temperature, on_teacher_error)
        self.events = self.targets.events
        # per teacher: its checkpoints in order, then the trained teacher itself (plain lists: frozen, not trained)
        self.stages = [[FrozenTeacher(m.to(t.device), t.name, t.num_classes) for m in trajectories[t.name]] + [t]
                       for t in self.teachers]
        self.phases = max(len(s) for s in self.stages)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # position on the trajectory

    # ------------------------------------------------------------ pipeline hooks
    @staticmethod
    def check_config(prep) -> None:
        for i, plan in enumerate(prep.teachers):
            if plan.spec.checkpoint is not None and not any(_trajectory_folder(plan.spec).glob("step-*.pt")):
                raise ConfigError(f"teachers[{i}] ({plan.spec.name}): recipe 'progressive' follows the checkpoints "
                                  f"saved while the teacher trained; none in {_trajectory_folder(plan.spec)}/step-*.pt. "
                                  "Give the teacher an arch so this run trains it (and keeps them)")

    @staticmethod
    def prepare_teachers(stage: TeacherStage) -> PreparedTeachers:
        opts = stage.cfg.recipe_options
        named, trajectories = [], {}
        for i, plan in enumerate(stage.plans):
            spec = plan.spec
            if plan.model is not None:
                folder, final_step = _trajectory_folder(spec), None
            else:
                every = spec.train.save_every or max(1, spec.train.steps // opts.checkpoints)
                plan = replace(plan, spec=replace(spec, train=spec.train.model_copy(update={"save_every": every})))
                folder, final_step = stage.out / "teachers" / spec.name, spec.train.steps
            model = stage.teacher(i, plan)
            steps = sorted(folder.glob("step-*.pt"))
            # the checkpoint of the last step is the trained teacher itself, which the recipe appends
            keep = [p for p in steps if final_step is None or int(p.stem.split("-")[1]) < final_step]
            trajectories[spec.name] = load_trajectory_files(keep, model)
            named.append(TrainedTeacher(spec.name, plan.arch.arch, model, spec.weight))
        return PreparedTeachers(named, {"trajectories": trajectories})

    # ------------------------------------------------------------ one step
    def current(self) -> tuple[int, list[FrozenTeacher], float]:
        """(phase, the teachers' checkpoints serving now, temperature) at this step."""
        phase = phase_of(int(self.steps_done), self.total_steps, self.phases)
        teachers = [s[checkpoint_index(phase, self.phases, len(s))] for s in self.stages]
        t = self.max_temperature
        if self.options.temperature_schedule == "anneal":
            t = annealed_temperature(phase, self.phases, self.max_temperature, self.options.final_temperature)
        return phase, teachers, t

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        phase, teachers, temperature = self.current()
        self.temperature = temperature
        teacher_logits, alive = self.targets.teacher_logits(x, index, teachers)  # [K, B, C], [K]
        self.targets.before_step(x, y, teacher_logits, alive,  # e.g. the bilevel meta-weight update
                                 lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd, temperature)
        logits = self.student(x)  # [B, C]
        kd, weights = self.targets.kd(logits, teacher_logits, y, alive, temperature)
        ce = ce_loss(logits, y)
        self.steps_done += 1
        losses = {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd,
                  "phase": torch.tensor(float(phase)), "temperature": torch.tensor(float(temperature))}
        return self.targets.log_terms(losses, weights)

