"""The pipeline of a language-model config (``data.name: text``): check everything, open the
run directory, tokenize the corpus once (memory-mapped rows), train the student from scratch
(``distill.baseline``) and with the chosen recipe (``offline``: token-level distillation from
frozen causal-LM teachers; ``scratch``), evaluate perplexity on the test split per domain, write
``summary.json`` and ``report.md``. Every stage is resumable bit-exactly, as in the
classification pipeline (:mod:`mtkd.pipeline`), whose run-directory rules it shares.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .aggregation import AGGREGATORS, AggregatorContext, build_aggregator
from .config import Config
from .data.text import TextSplits, TokenizerInfo, build_token_arrays, open_token_splits, prepare_text
from .errors import ConfigError
from .io import write_json
from .lm_eval import perplexities
from .models import build_model, count_params
from .models.causal_lm import context_length, special_token_ids
from .models.files import arch_config, load_model_file, save_model_file
from .recipes.lm_offline import LmOfflineRecipe
from .recipes.lm_scratch import LmScratchRecipe
from .report.language_model import write_lm_report
from .run_setup import (_comparable, announce, check_free_space, check_placement, fingerprint, open_run_dir,
                        resolve_device)
from .seeding import seed_everything
from .teachers import FrozenTeacher
from .teachers.placement import DeviceTurns, place_teachers, visiting
from .tracking import check_trackers, make_trackers
from .trainer import MetricsLog, Trainer

# aggregators that mean something per token, and the objective each one is (docs/tasks/text.md)
TEXT_AGGREGATORS = {
    "mean": "mixture of probabilities (equal weights)",
    "weighted": "mixture of probabilities (the teachers' configured weights)",
    "confidence": "mixture of probabilities, weighted per token by each teacher's loss on the next token (CA-MKD)",
    "entropy": "mixture of probabilities, weighted per token by each teacher's entropy (EB-KD)",
    "route": "one teacher chosen per token (by domain, or by its loss on the next token)",
}
TEXT_RECIPES = ("offline", "scratch")


@dataclass
class LmPrepared:
    cfg: Config
    files: dict
    tokenizer: object
    info: TokenizerInfo
    vocab: int  # the student's (and every teacher's) output size
    teachers: list[tuple[str, str, nn.Module, float]]  # (name, arch, model, weight)
    device: torch.device
    params: int = 0
    notes: list[str] = field(default_factory=list)


def _student_vocab(cfg: Config, info: TokenizerInfo) -> int:
    """The built-in gpt predicts the tokenizer's ids; an hf: model its own config's vocab_size."""
    arch = str(cfg.student.arch)
    if arch.startswith("hf:"):
        try:
            config = json.loads((Path(arch[3:]) / "config.json").read_text())
            return int(config["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"student.arch: {arch}/config.json gives no vocab_size") from None
    return info.vocab


def _check_teacher_tokenizer(where: str, path: Path, model: nn.Module, info: TokenizerInfo) -> None:
    """A teacher must use the data's tokenizer: its saved tokenizer (when its directory has one)
    must have the same vocabulary and special tokens, and its config the same special ids."""
    declared = special_token_ids(model)
    for name in ("eos", "pad", "bos"):
        if name in declared and name in info.special and declared[name] != info.special[name]:
            raise ConfigError(f"{where}: its config has {name}_token_id {declared[name]}, the tokenizer "
                              f"{info.path} has {info.special[name]}; a teacher must use the student's tokenizer "
                              "(cross-tokenizer distillation is not supported)")
    if path.is_dir() and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        from .data.tokens import load_tokenizer

        own = load_tokenizer(path, where)
        from .data.text import tokenizer_info

        theirs = tokenizer_info(own, path) if own.eos_token_id is not None else None
        data_tok = load_tokenizer(info.path, "data.tokenizer")
        if own.get_vocab() != data_tok.get_vocab() or (theirs is not None and theirs.special != info.special):
            raise ConfigError(f"{where}: its tokenizer ({path}) differs from data.tokenizer ({info.path}) in "
                              "vocabulary or special tokens; a teacher must use the student's tokenizer "
                              "(cross-tokenizer distillation is not supported)")


def prepare_lm(cfg: Config) -> LmPrepared:
    """Every check of a language-model run, before anything is written."""
    d = cfg.distill
    if d.recipe not in TEXT_RECIPES:
        raise ConfigError(f"distill.recipe: {d.recipe!r} is not available for language models (data.name: text); "
                          f"choose one of: {', '.join(TEXT_RECIPES)}")
    if d.recipe == "offline" and d.aggregator not in TEXT_AGGREGATORS:
        raise ConfigError(f"distill.aggregator: {d.aggregator!r} is not available for language models (it needs "
                          "per-sample accuracies, features or temperatures that have no per-token meaning here); "
                          f"choose one of: {', '.join(a for a in TEXT_AGGREGATORS if a in AGGREGATORS)}")
    if d.amp == "fp16":
        raise ConfigError("distill.amp: 'fp16' is not supported for language models yet; use 'bf16' or 'off'")
    if d.cache != "off" and d.recipe == "offline" and (d.cache_storage != "topk" or d.cache_topk <= 0):
        if d.cache == "always":
            raise ConfigError("distill.cache: language-model teachers are cached as top-k log-probabilities plus "
                              "the tail mass; set distill.cache_storage: topk and distill.cache_topk (e.g. 64)")
    if d.on_policy is not None and d.recipe != "offline":
        raise ConfigError("distill.on_policy: the student's samples are scored by teachers; use recipe offline")
    if d.on_policy is not None and d.on_policy.max_new_tokens >= cfg.data.seq_len:
        raise ConfigError(f"distill.on_policy.max_new_tokens: {d.on_policy.max_new_tokens} must be smaller than "
                          f"data.seq_len ({cfg.data.seq_len}), so every continuation has a prompt")
    files, tokenizer, info = prepare_text(cfg.data)
    seq = cfg.data.seq_len
    vocab = _student_vocab(cfg, info)
    if vocab < info.vocab:
        raise ConfigError(f"student.arch: predicts {vocab} tokens, the tokenizer has {info.vocab}; use a model "
                          "built for this tokenizer")
    student = build_model(cfg.student, (seq,), vocab)  # context, vocab and forward checks of the student
    _check_causal(student, seq, vocab, "student")
    params = count_params(student)
    teachers, notes = [], []
    for i, spec in enumerate(cfg.teachers):
        where = f"teachers[{i}] ({spec.name})"
        if spec.external is not None:
            raise ConfigError(f"{where}: a 'kind:' teacher is a classification model; a language-model teacher is "
                              "arch: hf:PATH (a causal LM) or checkpoint: an mtkd model file of a gpt")
        if spec.checkpoint is not None:
            model, blob = load_model_file(spec.checkpoint)
            arch = arch_config(blob, where)
            context = context_length(model)
            if context is not None and context < seq:
                raise ConfigError(f"data.seq_len: {seq} is longer than the context of {where} ({context} tokens); "
                                  "lower data.seq_len")
            teacher_vocab, source = int(blob["num_classes"]), spec.checkpoint
        elif spec.model is not None and str(spec.model.arch).startswith("hf:"):
            arch = spec.model
            path = Path(str(arch.arch)[3:])
            try:
                teacher_vocab = int(json.loads((path / "config.json").read_text())["vocab_size"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(f"{where}.arch: {path}/config.json gives no vocab_size") from None
            if teacher_vocab != vocab:
                raise ConfigError(f"{where}: predicts {teacher_vocab} tokens, the student {vocab}; teachers must "
                                  "use the student's tokenizer (cross-tokenizer distillation is not supported)")
            model = build_model(arch, (seq,), teacher_vocab)
            source = path
        else:
            raise ConfigError(f"{where}: language-model teachers are loaded, not trained here: give arch: hf:PATH "
                              "(a causal LM saved with save_pretrained) or checkpoint: (an mtkd model file, e.g. the "
                              "student.pt of a `distill.recipe: scratch` run)")
        if teacher_vocab != vocab:
            raise ConfigError(f"{where}: predicts {teacher_vocab} tokens, the student {vocab}; teachers must use the "
                              "student's tokenizer (cross-tokenizer distillation is not supported)")
        _check_causal(model, seq, vocab, where)
        _check_teacher_tokenizer(where, Path(source), model, info)
        teachers.append((spec.name, str(arch.arch), model, spec.weight))
        params += count_params(model)
    if d.recipe == "offline" and not teachers:
        raise ConfigError("teachers: recipe 'offline' needs at least one teacher")
    device = resolve_device(d.device)
    check_placement(cfg, (cfg.data.seq_len,), device)  # teachers[i].device, compile, channels_last (refused: 1-D)
    if d.cache == "auto" and teachers and d.recipe == "offline" and not uses_token_cache(d):
        notes.append("note: distill.cache 'auto' with cache_storage other than topk: language-model teachers run "
                     "live (set cache_storage: topk and cache_topk to cache them)")
    return LmPrepared(cfg, files, tokenizer, info, vocab, teachers, device, params, notes)


def _check_causal(model: nn.Module, seq: int, vocab: int, where: str) -> None:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, min(seq, 8), dtype=torch.long))
    except Exception as exc:  # noqa: BLE001 - a classification model given token ids, ...
        raise ConfigError(f"{where}: not a causal language model over token ids ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:160]})") from None
    finally:
        model.train(was)
    out = getattr(out, "logits", out)
    if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[-1] != vocab:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{where}: returns {shape} for token ids [1, {min(seq, 8)}]; a language model returns "
                          f"next-token logits [batch, seq_len, {vocab}]")


def uses_token_cache(d) -> bool:
    """Whether an offline language-model run reads its teachers from the top-k + tail token cache."""
    return d.cache != "off" and d.recipe == "offline" and d.cache_storage == "topk" and d.cache_topk > 0


def build_lm_recipe(recipe_name: str, student: nn.Module, teachers: list[tuple[str, nn.Module]], d, aggregator_options,
                    vocab: int, eos_id: int, pad_id: int, domain_names=(), teacher_weights=None,
                    device: torch.device | str = "cpu", cache=None, seed: int = 0,
                    turns: DeviceTurns | None = None) -> nn.Module:
    """The language-model recipe ``recipe_name`` ('offline' or 'scratch') over ``teachers`` (name, module),
    with the aggregator and loss of ``d`` (the distill settings); the pipeline and ``mtkd.distill`` call it."""
    if recipe_name == "scratch":
        if d.on_policy is not None:
            raise ConfigError("distill.on_policy: the student's samples are scored by teachers; recipe 'scratch' has "
                              "none (remove on_policy or use recipe offline)")
        return LmScratchRecipe(student, eos_id, pad_id)
    if recipe_name != "offline":
        raise ConfigError(f"distill.recipe: {recipe_name!r} is not available for language models; "
                          f"choose one of: {', '.join(TEXT_RECIPES)}")
    if d.aggregator not in TEXT_AGGREGATORS:
        raise ConfigError(f"distill.aggregator: {d.aggregator!r} is not available for language models; choose one "
                          f"of: {', '.join(a for a in TEXT_AGGREGATORS if a in AGGREGATORS)}")
    frozen = [FrozenTeacher(m, name, vocab) for name, m in teachers]
    ctx = AggregatorContext(teachers=frozen, num_classes=vocab, device=torch.device(device),
                            teacher_weights=list(teacher_weights) if teacher_weights is not None else None,
                            teacher_names=tuple(n for n, _ in teachers), domain_names=tuple(domain_names))
    aggregator = build_aggregator(d.aggregator, ctx, aggregator_options)
    return LmOfflineRecipe(student, teachers, aggregator, d.loss, eos_id, pad_id, d.temperature, d.alpha, d.beta,
                           d.token_chunk, cache, d.on_policy, seed, turns)


def place_lm_teachers(prep: LmPrepared) -> tuple[list[tuple[str, nn.Module]], DeviceTurns | None]:
    """(name, teacher) pairs placed as the config says, by the classification teachers' rule
    (:func:`mtkd.teachers.placement.place_teachers`): a teacher with ``device`` of its own goes there;
    the others sit beside the student, or take turns on the compute device (the returned DeviceTurns)."""
    own = {spec.name: spec.device for spec in prep.cfg.teachers if spec.device}
    frozen = [FrozenTeacher(model, name, device=own.get(name)) for name, _, model, _ in prep.teachers]
    turns = place_teachers(frozen, prep.device, prep.cfg.distill.teachers_on_device)
    return [(t.name, t.model) for t in frozen], turns


class LmRun:
    """The stages of one language-model run directory."""

    def __init__(self, prep: LmPrepared, data: TextSplits, out: Path, progress: bool, log, force: bool):
        self.prep, self.cfg, self.data, self.out = prep, prep.cfg, data, out
        self.progress, self.log, self.force = progress, log, force
        trackers = make_trackers(self.cfg.output.tracking, out, self.cfg.to_dict(), self.cfg.output.mlflow_uri)
        self.metrics = MetricsLog(out / "metrics.jsonl", trackers)
        self.state_path = out / "stages.json"
        self.stages = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.cache_info: dict | None = None  # the token cache's size and error, once built

    def token_cache(self):
        """Every teacher's top-k + tail on the training rows (built once, reused by later runs with
        the same rows and teachers); records its size and measured error for the summary."""
        from .cache.tokens import TokenCache, build_token_cache

        d, prep = self.cfg.distill, self.prep
        report = build_token_cache([(name, lambda m=m: m) for name, _, m, _ in prep.teachers], self.data.train.x,
                                   d.cache_dir or self.out / "teacher_cache", k=d.cache_topk, device=prep.device,
                                   temperature=d.temperature, log=self.log)
        errors = [e.manifest["topk_error"] for e in report.entries]
        self.cache_info = {"storage": "topk", "k": d.cache_topk, "bytes_per_token": round(report.bytes_per_token, 1),
                           "kl_mean": max(e["kl_mean"] for e in errors), "kl_max": max(e["kl_max"] for e in errors)}
        return TokenCache(report)

    def student(self, recipe_name: str) -> nn.Module:
        """Train (or load, when done) the student with ``recipe_name``; same initial weights for every recipe."""
        cfg, d, prep = self.cfg, self.cfg.distill, self.prep
        stem = "student_scratch" if recipe_name == "scratch" and d.recipe != "scratch" else "student"
        path = self.out / f"{stem}.pt"
        if path.exists():
            return load_model_file(path)[0]
        self.log(f"training student ({cfg.student.arch}) with recipe '{recipe_name}', {d.steps} steps")
        seed_everything(cfg.seed)
        seq = self.data.input_shape
        student = build_model(cfg.student, seq, prep.vocab)
        info = prep.info
        teachers, turns = place_lm_teachers(prep)
        cache = self.token_cache() if recipe_name == "offline" and uses_token_cache(d) else None
        if recipe_name == "scratch" and d.recipe != "scratch":  # the baseline: next-token cross-entropy only
            d = d.model_copy(update={"on_policy": None})
        recipe = build_lm_recipe(recipe_name, student, teachers, d, self.cfg.aggregator_options, prep.vocab,
                                 info.eos_id, info.pad_id, self.data.domain_names, [w for *_, w in prep.teachers],
                                 prep.device, cache, cfg.seed, turns)
        from .data import BatchLoader

        stage = "scratch" if stem == "student_scratch" else "distill"
        loader = BatchLoader(self.data.train, d.batch_size, shuffle=True, seed=cfg.seed)
        trainer = Trainer(recipe, loader, d, stage=stage, val_data=None,
                          checkpoint=self.out / "checkpoints" / f"{stem}.pt", metrics=self.metrics,
                          device=prep.device, progress=self.progress,
                          fingerprint=fingerprint(_comparable(cfg.to_dict()), stage), force=self.force)
        trainer.fit()
        self.stages[stage] = {"seconds": round(trainer.elapsed, 3), "steps": trainer.step,
                              "tokens_per_second": round(trainer.step * d.batch_size * seq[0]
                                                         / max(trainer.elapsed, 1e-9), 1)}
        write_json(self.state_path, self.stages)
        save_model_file(path, student, cfg.student, seq, prep.vocab)
        trainer.drop_checkpoint()
        return student


def run_lm_pipeline(cfg: Config, out: str | Path, restart: bool = False, progress: bool = True,
                    log: Callable[[str], None] = print, force: bool = False) -> dict:
    """:func:`mtkd.pipeline.run_pipeline` for ``data.name: text``."""
    from .rundir import precheck, release

    out = Path(out)
    precheck(out)
    if cfg.distill.threads:
        torch.set_num_threads(cfg.distill.threads)
    prep = prepare_lm(cfg)  # raises before anything is written
    cfg_dict = cfg.to_dict()
    cfg_dict["output"]["dir"] = str(out)
    check_free_space(out, prep)
    check_trackers(cfg.output.tracking, cfg.output.mlflow_uri)
    status = open_run_dir(out, cfg_dict, restart, force)
    try:
        finished = announce(status, out, prep.notes, log)
        if finished is not None:
            return finished
        token_dir = cfg.data.cache_dir or out / "tokens"
        build_token_arrays(cfg.data, prep.files, prep.tokenizer, prep.info, cfg.seed, token_dir, log)
        data = open_token_splits(token_dir, prep.info)
        return _stages(prep, data, out, progress, log, force)
    finally:
        release(out)


def _stages(prep: LmPrepared, data: TextSplits, out: Path, progress: bool, log, force: bool) -> dict:
    cfg, d = prep.cfg, prep.cfg.distill
    run = LmRun(prep, data, out, progress, log, force)
    scratch = run.student("scratch") if d.baseline and d.recipe != "scratch" else None
    student = run.student(d.recipe)
    device, names = prep.device, data.domain_names

    def record(models, **extra):
        return {**extra, "params": sum(count_params(m) for m in models),
                **perplexities([m.to(device) for m in models], data.test, names, device)}

    def teacher_record(model, **extra):  # where the teacher ran in training: its own device, or a visit
        with visiting(model, device) as where:
            return {**extra, "params": count_params(model), **perplexities([model], data.test, names, where)}

    teacher_models = [m for _, _, m, _ in prep.teachers]
    summary = {
        "dataset": "text", "task": "language_model", "recipe": d.recipe,
        "aggregator": d.aggregator if d.recipe == "offline" else None,
        "loss": d.loss if d.recipe == "offline" else "cross_entropy", "seed": cfg.seed,
        "student": record([student], arch=str(cfg.student.arch)),
        "teachers": [teacher_record(m, name=name, arch=arch) for name, arch, m, _ in prep.teachers],
    }
    apart = 0 < d.teachers_on_device < len(teacher_models) or any(spec.device for spec in cfg.teachers)
    if len(teacher_models) > 1 and not apart:  # the mixture needs every teacher on one device at once
        summary["ensemble"] = record(teacher_models, rule=f"mean of {len(teacher_models)} (mixture of probabilities)")
    if scratch is not None:
        summary["scratch"] = record([scratch], arch=str(cfg.student.arch))
    stage = run.stages.get("distill", {})  # the student's own stage (the baseline's is "scratch")
    summary["timing"] = {"distill_seconds": stage.get("seconds", 0.0), "steps": stage.get("steps", 0),
                         "tokens_per_second": stage.get("tokens_per_second", 0.0)}
    summary["data"] = {"train": len(data.train), "val": len(data.val) if data.val is not None else 0,
                       "test": len(data.test), "seq_len": data.input_shape[0], "domains": list(names),
                       "vocab": prep.info.vocab, "tokens": data.stats}
    if uses_token_cache(d):
        if run.cache_info is None:  # the student was already trained: read the entries' numbers back
            run.token_cache()
        summary["cache"] = run.cache_info
    summary["stages"] = run.stages
    write_lm_report(out, summary, run.metrics.read(), plots=cfg.output.plots)
    write_json(out / "summary.json", summary)  # last: its presence marks the run finished
    for tracker in run.metrics.trackers:
        tracker.finish(summary, out)
        tracker.close()
    return summary
