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

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..aggregation import AggregatorContext, build_aggregator
from ..errors import ConfigError
from ..models import build_model
from ..models.features import head_layer
from ..models.files import load_model_file
from ..seeding import seed_everything
from ..teachers import FrozenTeacher
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
    from ..config import _model

    return _model({k: v for k, v in spec.items() if k != "name"}, where)


def chain(options: AssistantOptions, student_cfg: BaseModel) -> list[list[tuple[str, BaseModel]]]:
    """The assistants level by level, as (name, model config); unnamed ones are assistant<level>[_<j>]."""
    raw = options.assistants if options.assistants is not None else [student_cfg.model_dump(mode="json")]
    out = []
    for i, level in enumerate(_levels(raw)):
        out.append([(spec.get("name") or (f"assistant{i + 1}" if len(level) == 1 else f"assistant{i + 1}_{j + 1}"),
                     _arch(spec, f"distill.assistants[{i}]")) for j, spec in enumerate(level)])
    return out


def train_chain(run, teachers: list) -> tuple[list, list[str], list[dict]]:
    """Train (or load) every assistant stage in order; returns the last level's models and names
    (the student's teachers) and [{"name", "arch", "level", "model"}] of every assistant."""
    cfg, d, data, device = run.cfg, run.cfg.distill, run.data, run.prep.device
    options: AssistantOptions = cfg.recipe_options
    models = list(teachers)
    names = [p.spec.name for p in run.prep.teachers]
    weights = [p.spec.weight for p in run.prep.teachers]
    settings = d.model_copy(update={"steps": options.assistant_steps or d.steps})
    done: list[dict] = []
    for level, specs in enumerate(chain(options, cfg.student)):
        trained = []
        for j, (name, arch) in enumerate(specs):
            path = run.out / "assistants" / f"{name}.pt"
            if path.exists():
                model = load_model_file(path)[0]
            else:
                run.log(f"training assistant {name} ({arch.arch}, level {level + 1}, {settings.steps} steps, "
                        f"from {', '.join(names)})")
                seed = cfg.seed + 1000 + 100 * level + j
                seed_everything(seed)
                model = build_model(arch, data.input_shape, run.prep.num_classes)
                frozen = []
                for m, n in zip(models, names):
                    t = FrozenTeacher(m.to(device), n)
                    t.check_classes(data.train.x[:1].to(device), run.prep.num_classes)
                    frozen.append(t)
                ctx = AggregatorContext(frozen, run.prep.num_classes, weights, data.val,
                                        head_layer(model).in_features, device)
                aggregator = build_aggregator(d.aggregator, ctx, cfg.aggregator_options)
                recipe = OfflineRecipe(model, frozen, aggregator, temperature=d.temperature, alpha=d.alpha,
                                       on_teacher_error=d.on_teacher_error)
                trainer = run._train(f"assistant/{name}", recipe, data.transfer_set(), settings, seed,
                                     f"assistant-{name}.pt", None)
                run.save_stage(trainer, path, model, arch, run.prep.num_classes)
            trained.append(model)
            done.append({"name": name, "arch": arch.arch, "level": level + 1, "model": model})
        models, names, weights = trained, [n for n, _ in specs], [1.0] * len(specs)
    return models, names, done


class AssistantRecipe(OfflineRecipe):
    description = "TAKD: teacher(s) -> assistant(s) -> student, each stage a multi-teacher distillation (Mirzadeh et al. 2020)"
    Options = AssistantOptions
    trains_assistants = True  # the pipeline runs train_chain first; this recipe is the last (student) stage

    def __init__(self, student, teachers, aggregator, temperature: float = 4.0, alpha: float = 0.9,
                 options: AssistantOptions | None = None, on_teacher_error: str = "stop", **_):
        super().__init__(student, teachers, aggregator, temperature, alpha, on_teacher_error=on_teacher_error)

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
