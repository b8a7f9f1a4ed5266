"""Config: YAML loaded with ``yaml.safe_load``, ``--set key.path=value`` overrides, and
validation of every key before any work starts.

Top-level sections: ``seed``, ``data``, ``teachers`` (a list), ``student``, ``distill``,
``output``. Keys inside a section belong to the component its ``name`` / ``arch`` /
``recipe`` names; each component is a pydantic model with defaults, so a short config
works, and unknown keys or wrong types are errors naming the key and what is allowed.
"""
from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .aggregation import AGGREGATORS
from .data import DATASETS
from .errors import ConfigError
from .models import parse_model
from .options import DistillConfig, NoOptions, OutputConfig, TeacherSpec, TrainConfig
from .recipes import RECIPES
from .schema import did_you_mean, pick as _pick, validate as _validate
from .teachers.kinds import TEACHER_KINDS

_model = parse_model  # a model section (arch + size keys) -> its validated config

SECTIONS = ("seed", "data", "teachers", "student", "distill", "output")


@dataclass
class Config:
    seed: int
    data: BaseModel
    teachers: list[TeacherSpec]
    student: BaseModel
    distill: DistillConfig
    output: OutputConfig = field(default_factory=OutputConfig)
    # keys of the distill section that belong to the chosen aggregator and recipe
    aggregator_options: BaseModel = field(default_factory=NoOptions)
    recipe_options: BaseModel = field(default_factory=NoOptions)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved config (every default filled in), as plain YAML-able data."""
        teachers = []
        for t in self.teachers:
            entry: dict[str, Any] = {"name": t.name}
            if t.external is not None:  # an external teacher is never trained: no train section
                entry.update(t.external.model_dump(mode="json"))
                if t.model is not None:
                    entry.update(t.model.model_dump(mode="json"))
                entry["weight"] = t.weight
                if t.device is not None:
                    entry["device"] = t.device
                teachers.append(entry)
                continue
            if t.model is not None:
                entry.update(t.model.model_dump(mode="json"))
            if t.checkpoint is not None:
                entry["checkpoint"] = str(t.checkpoint)
            entry["weight"] = t.weight
            if t.device is not None:
                entry["device"] = t.device
            entry["train"] = t.train.model_dump(mode="json")
            teachers.append(entry)
        return {
            "seed": self.seed,
            "data": self.data.model_dump(mode="json"),
            "teachers": teachers,
            "student": self.student.model_dump(mode="json"),
            "distill": {**self.distill.model_dump(mode="json"),
                        "recipe": component_dict(self.distill.recipe, self.recipe_options),
                        "aggregator": component_dict(self.distill.aggregator, self.aggregator_options)},
            "output": self.output.model_dump(mode="json"),
        }


# ---------------------------------------------------------------- validation helpers

TEACHER_KEYS = ("name", "checkpoint", "weight", "train", "device")
DEVICE_NAME = re.compile(r"cpu|cuda(:\d+)?")


def _device(raw: dict, where: str) -> str | None:
    """``teachers[i].device``: where that teacher runs ('cpu', 'cuda', 'cuda:N'), or None (beside the student)."""
    device = raw.get("device")
    if device is None:
        return None
    if not isinstance(device, str) or not DEVICE_NAME.fullmatch(device):
        raise ConfigError(f"{where}.device: 'cpu', 'cuda' or 'cuda:N' (a GPU index), got {device!r}; "
                          "leave it out to run the teacher beside the student")
    return device


def _teacher(raw: Any, i: int) -> TeacherSpec:
    where = f"teachers[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with 'name' and 'arch' or 'checkpoint', got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{where}.name: required, a non-empty string without '/' (got {name!r})")
    if "kind" in raw:
        return _external_teacher(raw, where, name)
    model_keys = {k: v for k, v in raw.items() if k not in TEACHER_KEYS}
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None:
        checkpoint = Path(str(checkpoint))
        if not checkpoint.is_file():
            raise ConfigError(f"{where}.checkpoint: file not found: {checkpoint}")
    if "arch" not in model_keys and checkpoint is None:
        if model_keys:
            raise ConfigError(f"{where}: keys {sorted(model_keys)} need an 'arch'; allowed teacher keys: "
                              f"{', '.join(TEACHER_KEYS)}, arch and the model's size keys")
        raise ConfigError(f"{where}: give 'arch' (a built-in model) or 'checkpoint' (a file)")
    model = _model(model_keys, where) if "arch" in model_keys else None
    weight = _weight(raw, where)
    train = _validate(TrainConfig, raw.get("train") or {}, f"{where}.train", "teacher training")
    return TeacherSpec(name, model, checkpoint, weight, train, device=_device(raw, where))


def _weight(raw: dict, where: str) -> float:
    weight = raw.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(f"{where}.weight: a non-negative number (got {weight!r})")
    return float(weight)


def _external_teacher(raw: dict, where: str, name: str) -> TeacherSpec:
    """A teacher with ``kind:`` (see ``mtkd.teachers.kinds``): loaded from a file, never trained."""
    kind = _pick(TEACHER_KINDS, raw, "kind", where, "teacher kind")
    entry = TEACHER_KINDS[kind]
    fields = entry.Options.model_fields
    rest = {k: v for k, v in raw.items() if k not in fields and k not in ("name", "weight", "device")}
    model = None
    if entry.needs_arch:
        if "arch" not in rest:
            raise ConfigError(f"{where}: kind {kind!r} needs 'arch' (a built-in model) and its size keys")
        model = _model(rest, where)
    elif rest:
        raise ConfigError(f"{where}.{sorted(rest)[0]}: unknown key for a teacher of kind {kind!r}"
                          f"{did_you_mean(sorted(rest)[0], [*fields, 'name', 'weight', 'device'])}; "
                          f"allowed keys: name, weight, device, {', '.join(fields)}")
    opts = _validate(entry.Options, {k: v for k, v in raw.items() if k in fields}, where, f"teacher kind '{kind}'")
    if not opts.path.exists():
        raise ConfigError(f"{where}.path: not found: {opts.path}")
    return TeacherSpec(name, model, None, _weight(raw, where), TrainConfig(), external=opts,
                       device=_device(raw, where))


def parse_config(raw: Any) -> Config:
    """Validate a raw config mapping (as loaded from YAML) into a :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"config: unknown section {unknown[0]!r}{did_you_mean(unknown[0], SECTIONS)}; "
                          f"allowed sections: {', '.join(SECTIONS)}")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed: an integer (got {seed!r})")

    data_raw = raw.get("data") or {}
    if not isinstance(data_raw, dict):
        raise ConfigError(f"data: expected a mapping with 'name', got {data_raw!r}")
    data_name = _pick(DATASETS, data_raw, "name", "data", "data set", default="mnist1d")
    data = _validate(DATASETS[data_name].config, data_raw, "data", f"data set '{data_name}'")

    teachers_raw = raw.get("teachers") or []
    if not isinstance(teachers_raw, list):
        raise ConfigError(f"teachers: expected a list of teachers, got {type(teachers_raw).__name__}")
    teachers = [_teacher(t, i) for i, t in enumerate(teachers_raw)]
    names = [t.name for t in teachers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"teachers: the name {dup!r} is used twice; teacher names must be unique")

    student_raw = raw.get("student") or {"arch": "mlp"}
    if not isinstance(student_raw, dict):
        raise ConfigError(f"student: expected a mapping with 'arch', got {student_raw!r}")
    student = _model(student_raw, "student")

    distill, aggregator_options, recipe_options = parse_distill(raw.get("distill") or {})
    if RECIPES[distill.recipe].traits.needs_teachers and not teachers:
        raise ConfigError(f"teachers: recipe {distill.recipe!r} needs at least one teacher; "
                          f"add teachers or use distill.recipe: scratch")
    for t in teachers:
        if t.external is None and t.model is not None and t.model.num_classes and student.num_classes \
                and t.model.num_classes != student.num_classes:
            raise ConfigError(f"teachers: teacher {t.name!r} has {t.model.num_classes} classes "
                              f"but the student has {student.num_classes}")
    if distill.on_policy is not None and data_name != "text":
        raise ConfigError(f"distill.on_policy: on-policy distillation samples continuations from a language-model "
                          f"student and needs data.name: text (data set {data_name!r} is not token sequences); "
                          "remove distill.on_policy")
    if distill.on_policy is not None and distill.recipe != "offline":
        raise ConfigError(f"distill.on_policy: the student's samples are scored by teachers, so it needs "
                          f"distill.recipe: offline (got {distill.recipe!r}); remove distill.on_policy")
    seq_len = getattr(data, "seq_len", None)
    if distill.on_policy is not None and seq_len is not None and distill.on_policy.max_new_tokens >= seq_len:
        raise ConfigError(f"distill.on_policy.max_new_tokens: {distill.on_policy.max_new_tokens} leaves no prompt in "
                          f"rows of data.seq_len {seq_len} tokens; set it below {seq_len}")
    check = getattr(AGGREGATORS[distill.aggregator], "check_config", None)
    if check is not None:  # options that must agree with the teachers and the data (route's domain map)
        domains = getattr(data, "domains", None)
        check(aggregator_options, names, list(domains) if domains else None, f"data set '{data_name}'")
    output = _validate(OutputConfig, raw.get("output") or {}, "output", "output")
    return Config(seed, data, teachers, student, distill, output, aggregator_options, recipe_options)


COMPONENT_KEYS = ("recipe", "aggregator")  # distill keys naming a component: a name or {name: ..., <options>}


def _component(raw: dict, key: str, table: dict, default: str) -> tuple[str, dict]:
    """(name, nested options) of ``distill.<key>``: a name, or a mapping with ``name`` and options."""
    value = raw.get(key, default)
    if isinstance(value, dict):
        options = {k: v for k, v in value.items() if k != "name"}
        name = _pick(table, {"name": value.get("name", default)}, "name", f"distill.{key}", key)
        return name, options
    return _pick(table, {key: value}, key, "distill", key), {}


def parse_distill(raw: Any) -> tuple[DistillConfig, BaseModel, BaseModel]:
    """Split the ``distill`` section into the shared training keys, the options of the chosen
    aggregator and those of the chosen recipe, and validate each part.

    ``recipe`` and ``aggregator`` are each a name or a mapping ``{name: ..., <its options>}``.
    A flat option key in ``distill`` is shorthand for the one component whose schema declares
    it; a key that two schemas declare is ambiguous and refused (write it nested)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"distill: expected a mapping of keys, got {raw!r}")
    recipe, recipe_nested = _component(raw, "recipe", RECIPES, "offline")
    aggregator, aggregator_nested = _component(raw, "aggregator", AGGREGATORS, "mean")
    schemas = [DistillConfig, RECIPES[recipe].Options, AGGREGATORS[aggregator].Options]
    labels = ["distill", f"recipe '{recipe}'", f"aggregator '{aggregator}'"]
    parts: list[dict] = [{"recipe": recipe, "aggregator": aggregator}, dict(recipe_nested), dict(aggregator_nested)]
    for key, value in raw.items():
        if key in COMPONENT_KEYS:
            continue
        owners = [i for i, schema in enumerate(schemas) if key in schema.model_fields]
        if len(owners) > 1:  # a component that got this key nested cannot be what the flat key means
            owners = [i for i in owners if key not in parts[i]] or owners
        if not owners:
            allowed = ", ".join(k for schema in schemas for k in schema.model_fields)
            hint = did_you_mean(key, [k for schema in schemas for k in schema.model_fields])
            raise ConfigError(f"distill.{key}: unknown key for distill (recipe {recipe!r}, aggregator "
                              f"{aggregator!r}){hint}; allowed keys: {allowed}")
        if len(owners) > 1:
            where = " and ".join(labels[i] for i in owners)
            nested = next((COMPONENT_KEYS[i - 1] for i in owners if i > 0), "recipe")
            raise ConfigError(f"distill.{key}: a key of both {where}; write a component's option under its "
                              f"name, e.g. distill.{nested}: {{name: {recipe if nested == 'recipe' else aggregator}, "
                              f"{key}: ...}}")
        owner = owners[0]
        if key in parts[owner]:
            raise ConfigError(f"distill.{key}: given twice (flat and under distill.{COMPONENT_KEYS[owner - 1]}); "
                              "keep one")
        parts[owner][key] = value
    for i, (nested, key) in enumerate(zip((recipe_nested, aggregator_nested), COMPONENT_KEYS), start=1):
        for name in nested:
            if name not in schemas[i].model_fields:
                allowed = ", ".join(schemas[i].model_fields) or "none"
                raise ConfigError(f"distill.{key}.{name}: unknown option for {labels[i]}"
                                  f"{did_you_mean(name, schemas[i].model_fields)}; allowed options: {allowed}")
    # errors name where the key was written: distill.<key> (flat) or distill.aggregator.<key> (nested)
    wheres = ["distill", "distill.recipe" if recipe_nested else "distill",
              "distill.aggregator" if aggregator_nested else "distill"]
    base, recipe_options, aggregator_options = (_validate(schema, part, where, label)
                                                for schema, part, where, label in zip(schemas, parts, wheres, labels))
    return base, aggregator_options, recipe_options


def component_dict(name: str, options: BaseModel) -> str | dict:
    """A component as the resolved config writes it: its name, or {name, <options>} when it has options."""
    dumped = options.model_dump(mode="json")
    return {"name": name, **dumped} if dumped else name


# ---------------------------------------------------------------- loading and overrides

def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    from .safe_yaml import MAX_BYTES, load_yaml_text

    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, more than a config needs (at most {MAX_BYTES:,})")
        return load_yaml_text(path.read_text(), str(path))  # safe_load with limits on size, depth, aliases
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (YAML) file") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None


def apply_overrides(raw: Any, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``3`` is an int, ``[1, 2]`` a list).

    List items are addressed by index: ``teachers.0.arch=gru`` or ``teachers[0].arch=gru``.
    """
    raw = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError("config: expected a mapping of sections at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. distill.steps=1000")
        key, text = item.split("=", 1)
        parts = [p for p in key.replace("[", ".").replace("]", "").split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        from .safe_yaml import load_yaml_text

        value = load_yaml_text(text, f"--set {key}", invalid=text) if text else ""
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {key}: {here} is not an item of a list of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if depth == 1 and parts[0] == "distill" and part in COMPONENT_KEYS and isinstance(node.get(part), str):
                        node[part] = {"name": node[part]}  # --set distill.aggregator.form=joint on `aggregator: meta`
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is a value, not a section")
    return raw


# keys whose values are input files or folders: in a config file, relative to the file's folder
PATH_KEYS = {"data": ("train", "test", "unlabeled", "path", "root", "tokenizer"),
             "model": ("checkpoint", "path", "weights")}


def resolve_paths(raw: Any, base: str | Path) -> Any:
    """A copy of ``raw`` whose relative input paths (data files, teacher and student files) are
    taken from ``base``, the config file's folder, and made absolute. Output paths (output.dir,
    distill.cache_dir) and ``--set`` values stay relative to the current directory."""
    if not isinstance(raw, dict):
        return raw
    base = Path(base).resolve()
    raw = copy.deepcopy(raw)

    def fix(section: Any, keys) -> None:
        if isinstance(section, dict):
            for key in keys:
                value = section.get(key)
                if isinstance(value, str) and value and not Path(value).is_absolute():
                    section[key] = os.path.normpath(base / value)  # no "dir/../" left in messages

    fix(raw.get("data"), PATH_KEYS["data"])
    domains = raw["data"].get("domains") if isinstance(raw.get("data"), dict) else None
    for spec in domains.values() if isinstance(domains, dict) else []:  # text: glob patterns of each domain
        if isinstance(spec, dict) and isinstance(spec.get("paths"), list):
            spec["paths"] = [os.path.normpath(base / p) if isinstance(p, str) and p and not Path(p).is_absolute()
                             else p for p in spec["paths"]]
    def fix_hf(section: Any) -> None:  # arch: "hf:PATH" names a directory, an input like the others
        arch = section.get("arch") if isinstance(section, dict) else None
        if isinstance(arch, str) and arch.startswith("hf:") and len(arch) > 3 and not Path(arch[3:]).is_absolute():
            section["arch"] = "hf:" + os.path.normpath(base / arch[3:])

    fix(raw.get("student"), PATH_KEYS["model"])
    fix_hf(raw.get("student"))
    for teacher in raw.get("teachers") or [] if isinstance(raw.get("teachers"), list) else []:
        fix(teacher, PATH_KEYS["model"])
        fix_hf(teacher)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The config in file ``path`` (relative input paths in it are taken from its folder; see
    :func:`resolve_paths`), with ``--set`` overrides applied."""
    raw = resolve_paths(load_yaml(path), Path(path).parent) if path is not None else {}
    return parse_config(apply_overrides(raw, overrides or []))


def flatten_config(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: {"distill.aggregator": "mean", "teachers.0.arch": "cnn1d", ...}."""
    if isinstance(obj, (dict, list)):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        out: dict[str, Any] = {}
        for k, v in items:
            out.update(flatten_config(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}
