"""Teacher assistants (TAKD): teacher(s) -> assistant(s) -> ... -> student, trained in sequence.

Mirzadeh, Farajtabar, Li, Levine, Matsukawa and Ghasemzadeh, "Improved Knowledge Distillation
via Teacher Assistant" (AAAI 2020, arXiv:1902.03393): when the gap between teacher and student
is too large, distill first into an intermediate-size assistant, then from the assistant into
the student. The chain is named in the config, one level per entry; a level is one model spec
or a list of them (several assistants at one level):

    distill:
      recipe: assistant
      assistants:
        - {arch: cnn1d, channels: 16}                   # level 1, learns from every teacher
        - [{arch: mlp, hidden: [64]}, {arch: cnn1d, channels: 8}]   # level 2, learns from level 1

Every stage is a multi-teacher offline distillation (``OfflineRecipe``: (1 - alpha) * CE +
alpha * KD to the configured aggregator's target) from all models of the previous level, on
the same transfer set, for ``assistant_steps`` steps (default: ``distill.steps``). Each
assistant is its own pipeline stage (``assistant/<name>``), resumable from its checkpoint and
kept in ``assistants/<name>.pt``; the student is the last stage and learns from the last level.
Without ``assistants`` the chain is one assistant of the student's own architecture and size.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError
from ..models import build_model, parse_model
from ..models.files import load_model_file
from ..seeding import seed_everything
from .base import TeacherStage, TrainedTeacher
from .offline import OfflineRecipe


def _levels(raw: list) -> list[list[dict]]:
    return [entry if isinstance(entry, list) else [entry] for entry in raw]


class AssistantOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    assistants: list[dict[str, Any] | list[dict[str, Any]]] | None = Field(
        None, description="the chain: one model spec (arch + size keys, optional name) or a list of them per "
                          "level; default: one assistant like the student")
    assistant_steps: int | None = Field(None, gt=0, description="steps of each assistant stage (default: distill.steps)")

    @field_validator("assistants")
    @classmethod
    def _check_specs(cls, value):
        if value is None:
            return value
        if not value:
            raise ConfigError("distill.assistants: an empty chain; give at least one level or leave the key out")
        names = []
        for i, level in enumerate(_levels(value)):
            if not level:
                raise ConfigError(f"distill.assistants[{i}]: an empty level; give at least one model spec")
            for j, spec in enumerate(level):
                name = spec.get("name", "")
                if not isinstance(name, str) or "/" in name:
                    raise ConfigError(f"distill.assistants[{i}].name: a string without '/' (got {name!r})")
                _arch(spec, f"distill.assistants[{i}]" + (f"[{j}]" if len(level) > 1 else ""))
                names += [name] if name else []
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ConfigError(f"distill.assistants: the name {dup!r} is used twice; assistant names must be unique")
        return value


def _arch(spec: dict, where: str) -> BaseModel:
    return parse_model({k: v for k, v in spec.items() if k != "name"}, where)


def chain(options: AssistantOptions, student_cfg: BaseModel) -> list[list[tuple[str, BaseModel]]]:
    """The assistants level by level, as (name, model config); unnamed ones are assistant<level>[_<j>]."""
    raw = options.assistants if options.assistants is not None else [student_cfg.model_dump(mode="json")]
    out = []
    for i, level in enumerate(_levels(raw)):
        out.append([(spec.get("name") or (f"assistant{i + 1}" if len(level) == 1 else f"assistant{i + 1}_{j + 1}"),
                     _arch(spec, f"distill.assistants[{i}]")) for j, spec in enumerate(level)])
    return out


def train_chain(stage: TeacherStage, teachers: list) -> tuple[list, list[str], list[dict]]:
    """Train (or load) every assistant stage in order; returns the last level's models and names
    (the student's teachers) and [{"name", "arch", "level", "model"}] of every assistant.

    Each stage is an ``offline`` distillation built by the same builder as the student's
    (aggregator, teacher cache, monitor), from the level before it."""
    cfg, d = stage.cfg, stage.cfg.distill
    options: AssistantOptions = cfg.recipe_options
    level_teachers = [TrainedTeacher(p.spec.name, p.arch.arch, m, p.spec.weight) for p, m in zip(stage.plans, teachers)]
    settings = d.model_copy(update={"steps": options.assistant_steps or d.steps})
    done: list[dict] = []
    for level, specs in enumerate(chain(options, cfg.student)):
        trained = []
        for j, (name, arch) in enumerate(specs):
            path = stage.out / "assistants" / f"{name}.pt"
            if path.exists():
                model = load_model_file(path)[0]
            else:
                stage.log(f"training assistant {name} ({arch.arch}, level {level + 1}, {settings.steps} steps, "
                          f"from {', '.join(t.name for t in level_teachers)})")
                seed = cfg.seed + 1000 + 100 * level + j
                seed_everything(seed)
                model = build_model(arch, stage.data.input_shape, stage.num_classes)
                recipe, monitor = stage.build("offline", model, level_teachers)
                stage.train_stage(f"assistant/{name}", recipe, stage.data.transfer_set(), settings, seed, path,
                                  model, arch, monitor)
            trained.append(model)
            done.append({"name": name, "arch": arch.arch, "level": level + 1, "model": model})
        level_teachers = [TrainedTeacher(n, a.arch, m) for (n, a), m in zip(specs, trained)]
    return [t.model for t in level_teachers], [t.name for t in level_teachers], done


class AssistantRecipe(OfflineRecipe):
    description = "TAKD: teacher(s) -> assistant(s) -> student, each stage a multi-teacher distillation (Mirzadeh et al. 2020)"
    traits = replace(OfflineRecipe.traits, trains_assistants=True, checks_models=True)  # the chain's stages run first
    Options = AssistantOptions

    @staticmethod
    def check_models(cfg, student, teachers, input_shape, num_classes: int) -> None:
        """Every assistant can be built for this data and none shares a teacher's name, before any training."""
        names = [n for n, _ in teachers]
        for level in chain(cfg.recipe_options, cfg.student):
            for name, arch in level:
                if name in names:
                    raise ConfigError(f"distill.assistants: {name!r} is also a teacher's name; "
                                      "give the assistant another name")
                try:
                    build_model(arch, input_shape, num_classes)
                except ConfigError as exc:
                    raise ConfigError(f"distill.assistants ({name}): {exc}") from None
