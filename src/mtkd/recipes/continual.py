"""Continual multi-teacher distillation: a student learns a sequence of tasks (groups of
classes arriving one after another), each task with its own teacher(s), while distilling from
its own previous version so that it keeps what it knew.

Multi-teacher distillation for lifelong learning, built on Learning without Forgetting: Li and Hoiem, "Learning without Forgetting",
ECCV 2016 / TPAMI 2017 (arXiv:1606.09282). While learning task t the student sees only that
task's samples; before the task starts, a frozen copy of the student (its "previous version")
records its responses, and the loss keeps the student's outputs on the old classes close to
them (LwF's L_old, with their temperature T_o = 2 and weight lambda_o = 1)::

    loss_t = (1 - alpha) * CE(student[:, C_t], y)                      # the new task's classes C_t
           + alpha * T^2 * KL(aggregate_T(teachers of task t)[:, C_t] || student_T[:, C_t])
           + lambda_o * KL(softmax(previous[:, C_old] / T_o) || softmax(student[:, C_old] / T_o))

C_old: the classes of every earlier task. As in LwF, each task's loss looks at its own
outputs (here the task's classes within the shared output layer, like LwF's task heads); LwF
writes L_old as a cross-entropy with the recorded soft targets, which differs from the KL by a
constant. Without teachers the second term is dropped (LwF alone, CE weighted 1);
``distillation: false`` drops both distillation terms: plain fine-tuning, the baseline.

Tasks split ``distill.steps`` equally; each step uses the samples of the batch that belong to
the current task. Teachers: the pipeline trains every configured teacher once per task on
that task's training samples only (``<name>-task<t>`` in the summary); in the API pass the
teachers task by task (all of task 0, then task 1, ...). The previous version and the student
at the end of every task are part of the recipe's state, so a resumed run is exact, and after
training the pipeline reports test accuracy on every task seen so far after each task
(``summary.json`` key ``continual``): argmax over all classes seen so far (class-incremental),
and argmax within the task's own classes (task-aware).
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss
from ..teachers import FrozenTeacher
from ..trainer import predict_logits
from .progressive import phase_of
from .base import PreparedTeachers, TeacherStage, Traits, TrainedTeacher
from .offline import TeacherTargets


class ContinualOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    tasks: list[list[int]] = Field([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]],
                                   description="the tasks in order, each a list of classes (disjoint)")
    distillation: bool = Field(True, description="false: plain fine-tuning, no teacher and no LwF term (the baseline)")
    lwf_weight: float = Field(1.0, ge=0, description="lambda_o: weight of distilling from the previous version")
    lwf_temperature: float = Field(2.0, gt=0, description="T_o of the LwF term (the paper uses 2)")


def check_tasks(tasks: list[list[int]], num_classes: int, where: str = "distill.tasks") -> None:
    seen: set[int] = set()
    if not tasks or any(not task for task in tasks):
        raise ConfigError(f"{where}: a non-empty list of non-empty class lists, e.g. [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]")
    for task in tasks:
        bad = [c for c in task if not 0 <= c < num_classes]
        if bad:
            raise ConfigError(f"{where}: class {bad[0]} does not exist; the data has classes 0..{num_classes - 1}")
        twice = seen.intersection(task) or {c for c in task if task.count(c) > 1}
        if twice:
            raise ConfigError(f"{where}: class {min(twice)} is in more than one task; tasks must not overlap")
        seen.update(task)


def lwf_loss(student_logits: torch.Tensor, previous_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """LwF's L_old as a KL: KL(softmax(previous / T) || softmax(student / T)), mean over the batch.

    student_logits, previous_logits: [B, C_old] (the old classes' outputs only)."""
    p = F.softmax(previous_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return (torch.xlogy(p, p) - p * log_q).sum(-1).mean()


def _frozen_copy(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    out.requires_grad_(False)  # never given to the optimizer (make_optimizer skips frozen parameters)
    return out


class ContinualRecipe(nn.Module):
    description = "continual learning of class groups: per-task teachers + LwF from the previous student"
    traits = Traits(prepares_teachers=True, checks_config=True, reports_results=True)
    Options = ContinualOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher] = (), aggregator: nn.Module | None = None,
                 temperature: float = 4.0, alpha: float = 0.9, options: ContinualOptions | None = None,
                 steps: int = 1, on_teacher_error: str = "stop"):
        super().__init__()
        self.options = opts = options or ContinualOptions()
        self.tasks = opts.tasks
        n_tasks = len(self.tasks)
        self.teachers = list(teachers) if opts.distillation else []
        if len(self.teachers) % n_tasks:
            raise ConfigError(f"recipe 'continual': {len(self.teachers)} teachers for {n_tasks} tasks; pass the same "
                              "number of teachers for every task, task by task")
        self.per_task = len(self.teachers) // n_tasks
        self.student, self.aggregator = student, aggregator if self.teachers else None
        self.temperature, self.alpha, self.total_steps = temperature, alpha, steps
        # copies before any hook is registered on the student (a deep copy would copy the hook)
        self.previous = _frozen_copy(student)  # the student as it ended the previous task (LwF)
        self.task_ends = nn.ModuleList(_frozen_copy(student) for _ in range(n_tasks - 1))  # for the results
        # teachers, aggregator, fault policy, the aggregator's view of the student (feature hook, look-ahead)
        self.targets = TeacherTargets(self.teachers, self.aggregator, student, temperature, on_teacher_error)
        self.events = self.targets.events  # teacher faults and task starts, written to metrics by the trainer
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("task", torch.zeros((), dtype=torch.long))  # the task being learned

    # ------------------------------------------------------------ pipeline hooks
    @staticmethod
    def check_config(prep) -> None:
        opts, d = prep.cfg.recipe_options, prep.cfg.distill
        check_tasks(opts.tasks, prep.num_classes)
        if d.aggregator == "meta":
            raise ConfigError("distill.aggregator: 'meta' cannot weigh teachers that see only one task's classes; "
                              "use mean, weighted, accuracy, confidence, entropy, best, adaptive_temperature or aekd")
        if opts.distillation:
            for i, plan in enumerate(prep.teachers):
                if plan.spec.checkpoint is not None:
                    raise ConfigError(f"teachers[{i}] ({plan.spec.name}): recipe 'continual' trains each teacher once "
                                      "per task from its arch; give 'arch' instead of 'checkpoint'")

    @staticmethod
    def prepare_teachers(stage: TeacherStage) -> PreparedTeachers:
        opts = stage.cfg.recipe_options
        if not opts.distillation:
            return PreparedTeachers([])
        named, train, k = [], stage.data.train, len(stage.plans)
        for t, classes in enumerate(opts.tasks):
            subset = train.subset(torch.isin(train.y, torch.tensor(classes)).nonzero().flatten())
            for i, plan in enumerate(stage.plans):
                name = f"{plan.spec.name}-task{t}"
                task_plan = replace(plan, spec=replace(plan.spec, name=name))
                model = stage.teacher(t * k + i, task_plan, dataset=subset)
                named.append(TrainedTeacher(name, plan.arch.arch, model, plan.spec.weight))
        return PreparedTeachers(named)

    # ------------------------------------------------------------ one step
    def _start_task(self, task: int) -> None:
        """Keep the student as it ended the tasks before ``task``; it becomes the previous version."""
        for j in range(int(self.task), task):
            self.task_ends[j].load_state_dict(self.student.state_dict())
        self.previous.load_state_dict(self.student.state_dict())
        self.task.fill_(task)
        self.events.append({"event": "task_start", "task": task, "classes": self.tasks[task]})

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        t = phase_of(int(self.steps_done), self.total_steps, len(self.tasks))
        if t > int(self.task):
            self._start_task(t)
        self.steps_done += 1
        classes = torch.tensor(self.tasks[t], device=y.device)  # [C_t]
        keep = torch.isin(y, classes)  # the batch's samples of the current task
        zero = sum(p.sum() for p in self.student.parameters()) * 0.0  # a loss with a graph, value 0
        losses = {"loss": zero, "ce": zero.detach(), "task": torch.tensor(float(t))}
        if not keep.any():  # no sample of the current task in this batch
            return losses
        x, y = x[keep], y[keep]
        index = index[keep.cpu()] if index is not None else None
        # labels as positions within the task's classes: y == classes[target]
        target = (y.unsqueeze(1) == classes.unsqueeze(0)).float().argmax(1)  # [B]
        teacher_out = None
        if self.teachers:
            teacher_out = self._teacher_logits(t, x, index, classes)
            self.targets.before_step(x, target, *teacher_out,
                                     lambda z, kd: (1 - self.alpha) * ce_loss(z, target) + self.alpha * kd)
        logits = self.student(x)  # [B, C]
        ce = F.cross_entropy(logits[:, classes], target)
        loss, losses["ce"] = ce, ce
        if teacher_out is not None:
            kd, weights = self.targets.kd(logits[:, classes], teacher_out[0], target, teacher_out[1])
            loss = (1 - self.alpha) * ce + self.alpha * kd
            losses["kd"] = kd
            current = slice(t * self.per_task, (t + 1) * self.per_task)
            names = [teacher.name.rsplit("-task", 1)[0] for teacher in self.teachers[current]]  # as configured
            self.targets.log_terms(losses, weights[:, current], names)
        if t > 0 and self.options.distillation and self.options.lwf_weight > 0:
            old = torch.tensor([c for task in self.tasks[:t] for c in task], device=y.device)  # [C_old]
            with torch.no_grad():
                self.previous.eval()  # a frozen copy: recipe.train() must not turn its dropout / norm stats on
                previous = self.previous(x)[:, old]
            lwf = lwf_loss(logits[:, old], previous, self.options.lwf_temperature)
            loss = loss + self.options.lwf_weight * lwf
            losses["lwf"] = lwf
        losses["loss"] = losses["loss"] + loss  # + the aggregator's own terms, if it added any
        return losses

    def _teacher_logits(self, t: int, x, index, classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Every teacher's slot [K_all, B, C_t] with only task t's teachers alive (the others are
        placeholders with weight 0), so aggregators built for all teachers see a fixed layout."""
        current = slice(t * self.per_task, (t + 1) * self.per_task)
        logits, alive = self.targets.teacher_logits(x, index, self.teachers[current])
        every = torch.zeros(len(self.teachers), *logits.shape[1:], device=logits.device)
        every[current] = logits
        alive_every = torch.zeros(len(self.teachers), dtype=torch.bool, device=alive.device)
        alive_every[current] = alive
        return every[:, :, classes], alive_every

    # ------------------------------------------------------------ results
    @torch.no_grad()
    def results(self, data, device="cpu") -> dict:
        """Test accuracy on every task seen so far, after each task (written to summary.json)."""
        test = data.test
        after, aware = [], []
        for end in range(len(self.tasks)):
            model = self.task_ends[end] if end < len(self.tasks) - 1 else self.student
            logits = predict_logits(model, test.x, device)  # [N, C]
            seen = torch.tensor([c for task in self.tasks[:end + 1] for c in task])
            row, row_aware = [], []
            for task in self.tasks[:end + 1]:
                classes = torch.tensor(task)
                mask = torch.isin(test.y, classes)
                y = test.y[mask]
                pred_seen = seen[logits[mask][:, seen].argmax(1)]  # among every class seen so far
                pred_task = classes[logits[mask][:, classes].argmax(1)]  # among the task's own classes
                row.append(round(float((pred_seen == y).float().mean()), 4) if len(y) else None)
                row_aware.append(round(float((pred_task == y).float().mean()), 4) if len(y) else None)
            after.append(row)
            aware.append(row_aware)

        def means(rows):
            return [round(sum(v for v in r if v is not None) / max(1, sum(v is not None for v in r)), 4) for r in rows]

        return {"continual": {
            "tasks": self.tasks, "distillation": self.options.distillation, "lwf_weight": self.options.lwf_weight,
            "teachers_per_task": self.per_task,
            "accuracy_after_task": after, "average_after_task": means(after),
            "task_aware_accuracy_after_task": aware, "task_aware_average_after_task": means(aware)}}
