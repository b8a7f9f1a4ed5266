"""The whole pipeline a config describes: data -> teachers (trained or loaded) -> distillation
(and the from-scratch baseline) -> test evaluation -> summary.json, report.md.

Every stage writes its result atomically and is skipped when its result exists, and every
training stage resumes from its own checkpoint, so running the same command again with
the same run directory continues an interrupted run and does nothing for a finished one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import distributed
from .config import Config
from .data import BatchLoader, DataSplits, load_data
from .errors import ConfigError, MtkdError
from .aggregation.coverage import class_masks, coverage_mix, ensemble_mean
from .cache.views import ViewSource
from .evaluation import describe, predict_probs
from .io import write_json
from .models import build_model, count_params
from .models.files import arch_config, load_model_file, save_model_file
from .recipes import RECIPES, ScratchRecipe
from .recipes.base import PreparedTeachers, TeacherPlan, TrainedTeacher
from .recipes.build import build_recipe
from .seeding import seed_everything
from .teachers import FrozenTeacher
from .teachers.kinds import load_external
from .teachers.placement import visiting
from .tracking import check_trackers, make_trackers
from .trainer import MetricsLog, Trainer, predict_logits
from .report import build_summary, calibration_and_agreement, teacher_faults, write_report
from .recipes.assistant import train_chain
from .run_setup import MIN_FREE_BYTES, _comparable, announce, check_free_space, check_placement, fingerprint, open_run_dir, resolve_device  # noqa: F401,E501


@dataclass
class Prepared:
    cfg: Config
    data: DataSplits
    num_classes: int
    teachers: list[TeacherPlan]
    device: torch.device
    params: int = 0  # parameters of the student and every teacher, for the disk-space check
    notes: list[str] = field(default_factory=list)  # lines the run prints before it starts (silent surprises)


# aggregators that learn teacher weights from accuracy on the validation split
VALIDATION_AGGREGATORS = ("accuracy", "meta")



def prepare(cfg: Config) -> Prepared:
    """Everything that can be checked before a run directory is created or any training starts."""
    from .limits import check_config, check_model_size

    check_config(cfg)  # seeds, threads, generated data sizes: before anything is allocated
    data = load_data(cfg.data)
    num_classes = cfg.student.num_classes or data.num_classes
    if num_classes != data.num_classes:
        raise ConfigError(f"student.num_classes: {num_classes}, but data set '{data.name}' has {data.num_classes} classes")
    check_model_size(lambda: build_model(cfg.student, data.input_shape, num_classes), "student")
    for spec in cfg.teachers:
        if spec.external is None and spec.checkpoint is None and spec.model is not None:
            check_model_size(lambda: build_model(spec.model, data.input_shape, spec.model.num_classes or num_classes),
                             f"teacher {spec.name!r}")
    student_model = build_model(cfg.student, data.input_shape, num_classes)
    params = count_params(student_model)  # shape errors surface now
    built = []  # (teacher name, model) for a recipe's own checks of layer names, blocks, ...
    recipe_cls = RECIPES[cfg.distill.recipe]
    traits = recipe_cls.traits
    online_notes = []  # e.g. which features FFL's / AFD's own modules work on
    if traits.online:  # online recipes: build the cohort once, so its errors come now
        cohort = build_recipe(cfg.distill.recipe, build_model(cfg.student, data.input_shape, num_classes), [],
                              cfg.distill, recipe_options=cfg.recipe_options,
                              aggregator_options=cfg.aggregator_options, num_classes=num_classes,
                              input_shape=data.input_shape, example=None, device=torch.device("cpu"),
                              student_config=cfg.student, monitor=False).recipe
        online_notes = [e["note"] for e in cohort.events if "note" in e]
    if traits.needs_unlabeled and data.unlabeled is None:
        raise ConfigError(f"distill.recipe: {cfg.distill.recipe!r} needs an unlabeled pool; set data.unlabeled "
                          f"(mnist1d) or add x_unlabeled to the .npz file")
    plans, notes = [], list(online_notes)
    d = cfg.distill
    if d.cache == "always" and not traits.cacheable:
        raise ConfigError(f"distill.cache: 'always', but recipe {d.recipe!r} cannot use cached teacher outputs "
                          "(its teachers see inputs other than the fixed transfer set); use 'auto' or 'off'")
    if d.cache == "always" and data.augment is not None and d.cache_views == 0:
        raise ConfigError("distill.cache: 'always' with data.augment: a per-sample cache would serve the outputs of "
                          "another view; set distill.cache_views (views recorded per sample) or cache: off")
    if d.cache_views and data.augment is None:
        raise ConfigError("distill.cache_views: recorded views need data.augment (random transforms to record)")
    if d.cache_storage == "topk" and d.cache_topk <= 0:
        raise ConfigError("distill.cache_topk: cache_storage 'topk' needs cache_topk > 0 (classes kept per sample)")
    for i, spec in enumerate(cfg.teachers):
        where = f"teachers[{i}] ({spec.name})"
        model = None
        if spec.external is not None:  # ONNX, scikit-learn, ...: outputs already in the data set's class order
            model = load_external(spec, data)
            arch, classes = spec.model or spec.external, num_classes  # reports show 'onnx', 'sklearn', or the arch
            params += count_params(model)
        elif spec.checkpoint is not None:
            model, blob = load_model_file(spec.checkpoint)
            arch = arch_config(blob, where)
            if spec.model is not None and spec.model.model_dump() != arch.model_dump():
                raise ConfigError(f"{where}: arch keys {spec.model.model_dump()} differ from the checkpoint's "
                                  f"{arch.model_dump()}; drop them or make them match")
            if tuple(blob["input_shape"]) != tuple(data.input_shape):
                raise ConfigError(f"{where}: checkpoint expects inputs {blob['input_shape']}, "
                                  f"the data has {list(data.input_shape)}")
            classes = blob["num_classes"]
            params += count_params(model)
            built.append((spec.name, model))
        else:
            arch = spec.model
            classes = arch.num_classes or data.num_classes
            built.append((spec.name, build_model(arch, data.input_shape, classes)))
            params += count_params(built[-1][1])
            if getattr(arch, "weights", None) is not None or str(arch.arch).startswith("hf:"):
                model = built[-1][1]  # a library model with its weights: used as it is, never trained
        if classes != num_classes:
            raise ConfigError(f"{where}: the teacher has {classes} classes but the student has {num_classes}")
        if spec.external is not None and getattr(model, "drops_columns", False):
            known = [c for c, d in zip(model.teacher_classes, model.dropped.tolist()) if d]
            notes.append(f"teacher {spec.name}: classes {known[:10]} are not in the data set; they are left out "
                         "and its probabilities renormalised over the rest")
        if model is not None:  # a stored teacher must take the data's inputs and give finite outputs, now
            probe = data.train.x[:256]
            try:
                FrozenTeacher(model, spec.name, classes)(probe, data.train.index[:256])
            except MtkdError:
                raise
            except Exception as exc:  # noqa: BLE001 - onnxruntime, TorchScript, transformers: their own types
                detail = " ".join(str(exc).split())[:240]
                raise MtkdError(f"{where}: the teacher does not accept the data's inputs {list(probe.shape)} "
                                f"{str(probe.dtype).removeprefix('torch.')} ({type(exc).__name__}: {detail})") from None
        plans.append(TeacherPlan(spec, arch, classes, model))
    device = resolve_device(cfg.distill.device)
    check_placement(cfg, data.input_shape, device)
    if d.amp == "fp16" and device.type != "cuda":
        raise ConfigError("distill.amp: 'fp16' needs a CUDA device; use 'bf16' on the CPU, or 'off'")
    if traits.checks_models:  # e.g. hint layer names, before any training
        recipe_cls.check_models(cfg, student_model, built, data.input_shape, num_classes)
    unknown = [p.spec.name for p in plans if p.model is not None]  # loaded from files: trained on what?
    if unknown and d.aggregator in VALIDATION_AGGREGATORS and data.val is not None:
        notes.append(f"note: teachers {unknown} were trained outside this run on data mtkd does not know; the "
                     f"'{d.aggregator}' aggregator weighs them by their accuracy on mtkd's validation split, which "
                     "overstates a teacher that saw those rows in its training (e.g. trained on the whole train file)")
    prep = Prepared(cfg, data, num_classes, plans, device, params, notes)
    if traits.checks_config:  # recipe-specific checks of the prepared run, before any work
        recipe_cls.check_config(prep)
    return prep



# ---------------------------------------------------------------- stages

class Run:
    """The stages of one run directory; also the ``TeacherStage`` a recipe's ``prepare_teachers``
    sees (``cfg``, ``data``, ``num_classes``, ``plans``, ``out``, ``log``, ``teacher``,
    ``train_stage``, ``build``)."""

    def __init__(self, prep: Prepared, out: Path, progress: bool = True, log: Callable[[str], None] = print,
                 force: bool = False):
        self.prep, self.cfg, self.data = prep, prep.cfg, prep.data
        self.force = force
        self.out, self.progress, self.log = out, progress, log
        self.main = distributed.is_main()  # in a torchrun run only rank 0 writes the run directory
        # Only rank 0 of a torchrun job tracks: the others would write duplicate event files.
        trackers = make_trackers(self.cfg.output.tracking, out, self.cfg.to_dict(),
                                 self.cfg.output.mlflow_uri) if self.main else []
        self.metrics = MetricsLog(out / "metrics.jsonl" if self.main else None, trackers)
        self.num_classes, self.plans = prep.num_classes, prep.teachers
        self._transfer = None
        self._views = None  # the recorded views of the transfer set (view cache), built once
        self.state_path = out / "stages.json"
        self.stages = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def _record(self, stage: str, trainer: Trainer, batch_size: int) -> None:
        self.stages[stage] = {"seconds": round(trainer.elapsed, 3), "steps": trainer.step,
                              "examples_per_second": round(trainer.step * batch_size / max(trainer.elapsed, 1e-9), 1)}
        if self.main:
            write_json(self.state_path, self.stages)

    def _train(self, stage: str, recipe: nn.Module, dataset, settings, seed: int, ckpt: str, best: str | None,
               snapshot_dir: Path | None = None, monitor: Callable[[], dict] | None = None, views=None):
        # training batches are augmented (data.augment); with a view cache, by one of the recorded views
        # data.workers: batches read (images decoded, augmented) in DataLoader processes; pinned for a GPU
        loader = BatchLoader(dataset, settings.batch_size, shuffle=True, seed=seed,
                             augment=views if views is not None else self.data.augment,
                             workers=self.data.workers or 0, pin_memory=torch.device(self.prep.device).type == "cuda")
        trainer = Trainer(recipe, loader, settings, stage=stage, val_data=self.data.val,
                          checkpoint=self.out / "checkpoints" / ckpt,
                          best_path=self.out / best if best and self.main else None, metrics=self.metrics,
                          device=self.prep.device, progress=self.progress,
                          fingerprint=fingerprint(_comparable(self.cfg.to_dict()), stage), force=self.force,
                          snapshot_dir=snapshot_dir, monitor=monitor)
        trainer.fit()
        self._record(stage, trainer, settings.batch_size)
        return trainer

    def train_stage(self, stage: str, recipe: nn.Module, dataset, settings, seed: int, path: Path,
                    model: nn.Module, arch, monitor: Callable[[], dict] | None = None) -> None:
        """Train ``recipe`` (checkpoint checkpoints/<stage with - for />.pt, resumable), then save ``model``."""
        trainer = self._train(stage, recipe, dataset, settings, seed, f"{stage.replace('/', '-')}.pt", None,
                              monitor=monitor)
        self.save_stage(trainer, path, model, arch, self.num_classes)

    def build(self, recipe_name: str, student: nn.Module, teachers: list[TrainedTeacher], inputs: dict | None = None):
        """``recipe_name`` over ``teachers`` for ``student``, wired as every stage of this run is."""
        d = self.cfg.distill
        traits = RECIPES[recipe_name].traits
        cached = traits.cacheable and d.cache != "off" and bool(teachers)
        views = self.views(recipe_name, teachers)
        if cached and self.data.augment is not None and views is None:
            # augmented batches and no recorded views: a per-sample cache would serve another view's
            # outputs, so the teachers run live (cache: always was refused in prepare)
            cached, d = False, d.model_copy(update={"cache": "off"})
        return build_recipe(recipe_name, student, teachers, d, recipe_options=self.cfg.recipe_options,
                            aggregator_options=self.cfg.aggregator_options, num_classes=self.num_classes,
                            input_shape=self.data.input_shape, example=self.data.train.x[:2], device=self.prep.device,
                            seed=self.cfg.seed, val=self.data.val, unlabeled=self.data.unlabeled,
                            transfer=self.transfer() if cached else None, views=views,
                            cache_dir=d.cache_dir or self.out / "teacher_cache", student_config=self.cfg.student,
                            inputs=inputs, log=self.log, monitor=self.main)

    def views(self, recipe_name: str, teachers: list) -> "ViewSource | None":
        """With data.augment and distill.cache_views, for a recipe whose teacher outputs may be
        cached: the recorded views of the transfer set (built once per run), which the cache
        stores the teachers' outputs on and the training loader regenerates; else None."""
        d = self.cfg.distill
        if (self.data.augment is None or not d.cache_views or d.cache == "off" or not teachers
                or not RECIPES[recipe_name].traits.cacheable):
            return None
        if self._views is None:
            transfer = self.transfer()
            self._views = ViewSource(transfer.x, transfer.index, self.data.augment, self.cfg.seed, d.cache_views)
        return self._views

    def transfer(self):
        """The labeled split plus the unlabeled pool, built once per run."""
        if self._transfer is None:
            self._transfer = self.data.transfer_set()
        return self._transfer

    def teacher(self, i: int, plan: TeacherPlan, dataset=None) -> nn.Module:
        """Load or train teacher ``plan`` (on ``dataset``, default the labeled train split); with
        ``train.save_every`` its weights every N steps are kept in teachers/<name>/step-NNNNNN.pt."""
        spec = plan.spec
        if plan.model is not None:
            return plan.model
        path = self.out / "teachers" / f"{spec.name}.pt"
        if path.exists():
            return load_model_file(path)[0]
        self.log(f"training teacher {spec.name} ({plan.arch.arch}, {spec.train.steps} steps)")
        seed = self.cfg.seed + 1 + i
        seed_everything(seed)
        model = build_model(plan.arch, self.data.input_shape, plan.num_classes)
        trainer = self._train(f"teacher/{spec.name}", ScratchRecipe(model),
                              self.data.train if dataset is None else dataset, spec.train, seed,
                              f"teacher-{spec.name}.pt", None,
                              snapshot_dir=self.out / "teachers" / spec.name if spec.train.save_every else None)
        self.save_stage(trainer, path, model, plan.arch, plan.num_classes)
        return model

    def teachers(self) -> PreparedTeachers:
        """The teachers the chosen recipe distills from, and extra inputs for the recipe.

        A recipe that needs something else than the configured teachers trained on the labeled
        split (a trained copy of the student, per-task teachers, the teachers' checkpoints)
        declares ``prepares_teachers`` and gets this run as its ``TeacherStage``; the others
        get the configured teachers."""
        recipe_cls = RECIPES[self.cfg.distill.recipe]
        if recipe_cls.traits.prepares_teachers:
            return recipe_cls.prepare_teachers(self)
        if not recipe_cls.traits.needs_teachers:
            return PreparedTeachers([])
        return PreparedTeachers([TrainedTeacher(p.spec.name, p.arch.arch, self.teacher(i, p), p.spec.weight,
                                                p.spec.device) for i, p in enumerate(self.prep.teachers)])

    def student(self, recipe_name: str, teachers: list[TrainedTeacher], extra: dict | None = None) -> nn.Module:
        """Train the student with ``recipe_name``; the same seed gives every recipe the same initial student."""
        cfg, d = self.cfg, self.cfg.distill
        file_name = "student_scratch.pt" if recipe_name == "scratch" and d.recipe != "scratch" else "student.pt"
        path = self.out / file_name
        if path.exists():
            return load_model_file(path)[0]
        self.log(f"training student ({cfg.student.arch}) with recipe '{recipe_name}', {d.steps} steps")
        seed_everything(cfg.seed)
        student = build_model(cfg.student, self.data.input_shape, self.prep.num_classes)
        traits = RECIPES[recipe_name].traits
        recipe, monitor = self.build(recipe_name, student, teachers, extra)
        dataset = self.transfer() if traits.uses_unlabeled else self.data.train
        if traits.shards_data:  # codistillation: process r trains on its own shard
            dataset = distributed.shard(dataset)
        stem = file_name.removesuffix(".pt")
        trainer = self._train("scratch" if stem == "student_scratch" else "distill", recipe, dataset, d, cfg.seed,
                              f"{stem}.pt", f"{stem}_best.pt", monitor=monitor,
                              views=self.views(recipe_name, teachers),
                              snapshot_dir=self.out / "snapshots" / stem if d.save_every else None)
        if traits.finishes:  # e.g. codistillation's last exchange of copies (every process)
            recipe.finish()
        if traits.reports_results and self.main:  # e.g. continual: accuracy on every task after each task
            write_json(self.out / f"{stem}_results.json", recipe.results(self.data, self.prep.device))
        if traits.online and self.main:  # online recipes: peers, leader, fused model
            self._save_extra_models(recipe.extra_models())
        self.save_stage(trainer, path, student, cfg.student, self.prep.num_classes)
        return student

    def save_stage(self, trainer: Trainer, path: Path, model: nn.Module, arch, num_classes: int) -> None:
        """A finished stage: its model file (rank 0 writes it), then every process drops its stage
        checkpoint (its own: student.rank1.pt under codistillation) once the file exists, so a crash
        in between never loses the stage."""
        save_model_file(path, model, arch, self.data.input_shape, num_classes, self.data.class_names or None,
                        self.data.preprocess)
        distributed.barrier()
        trainer.drop_checkpoint()

    def _save_extra_models(self, extra: list[dict]) -> None:
        """Evaluate the models an online recipe trains beside the student into ``peers.json``
        (written before ``student.pt``, so a resumed run that finds the student finds them too),
        and save the built-in ones under ``peers/``."""
        rows = []
        for entry in extra:
            model, config = entry["module"], entry.get("config")
            if config is not None:
                save_model_file(self.out / "peers" / f"{entry['name']}.pt", model, config, self.data.input_shape,
                                self.prep.num_classes)
            arch = config.arch if config is not None else entry.get("arch", type(model).__name__)
            rows.append({"name": entry["name"], "role": entry["role"], "arch": arch,
                         **describe([model], self.data.test, self.prep.device)})
        write_json(self.out / "peers.json", rows)


def run_pipeline(cfg: Config, out: str | Path, restart: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print, force: bool = False) -> dict:
    """Run (or resume, or skip if finished) the pipeline ``cfg`` describes in run directory ``out``.

    ``force`` continues a run directory whose config or code version differs (the results
    then mix both); without it such a directory is refused.

    Returns the summary (the contents of ``summary.json``); {} on the other ranks of a torchrun job.
    """
    from .rundir import precheck

    if cfg.data.name == "text":  # language models: their own stages (mtkd.lm_pipeline)
        from .lm_pipeline import run_lm_pipeline

        return run_lm_pipeline(cfg, out, restart, progress, log, force)
    out = Path(out)
    precheck(out)  # a --out that is not mtkd's is refused before any slow work
    if cfg.distill.threads:
        torch.set_num_threads(cfg.distill.threads)
    prep = prepare(cfg)  # raises before anything is written
    if distributed.init(prep.device, timeout_s=1800.0):  # launched by torchrun: one process per device, rank 0 writes
        prep.device = distributed.local_device(prep.device)
        if not distributed.is_main():
            log = lambda message: None  # noqa: E731 - rank 0 speaks for all
    cfg_dict = cfg.to_dict()
    cfg_dict["output"]["dir"] = str(out)
    check_free_space(out, prep)
    check_trackers(cfg.output.tracking, cfg.output.mlflow_uri)
    from .rundir import release

    if distributed.is_main():
        status = open_run_dir(out, cfg_dict, restart, force)
    try:
        distributed.barrier()  # the others open the directory rank 0 has made (or reset)
        if not distributed.is_main():  # rank 0 holds the lock for the whole job
            status = open_run_dir(out, cfg_dict, False, force, lock=False)
        finished = announce(status, out, prep.notes, log)
        if finished is not None:
            return finished
        return _stages(prep, cfg, out, progress, log, force)
    finally:
        release(out)


def _stages(prep: Prepared, cfg: Config, out: Path, progress: bool, log: Callable[[str], None],
            force: bool) -> dict:
    """Teachers, baseline, distillation, evaluation and report of a run directory that is open."""

    run = Run(prep, out, progress, log, force)
    d = cfg.distill
    named, extra = run.teachers()
    teachers = [t.model for t in named]
    scratch = run.student("scratch", []) if d.baseline and d.recipe != "scratch" else None
    student_teachers, assistants = named, []
    if RECIPES[d.recipe].traits.trains_assistants:  # TAKD: the chain's stages come first

        models, names, assistants = train_chain(run, teachers)
        arch_of = {a["name"]: a["arch"] for a in assistants}
        student_teachers = [TrainedTeacher(n, arch_of[n], m) for n, m in zip(names, models)]
    student = run.student(d.recipe, student_teachers, extra)
    if not run.main:  # torchrun: rank 0 evaluates and writes; the others are done
        return {}

    device, test = prep.device, prep.data.test
    # test-split probabilities, computed once (each teacher runs once): accuracy, ECE, reliability
    # bins and agreement use them; the ensemble is the evaluation's rule (ensemble_mean) over them
    # each teacher runs where it ran in training: beside the student, on its own device, or visiting the
    # device from CPU memory (teachers taking turns)
    raw = []  # K x [N, C]
    for m in teachers:
        with visiting(m, device) as where:
            raw.append(torch.softmax(predict_logits(m, test.x, where), dim=-1))
    masks = class_masks(teachers, prep.num_classes)
    probs_t = [ensemble_mean(torch.stack(raw), [k], masks) for k in range(len(teachers))]
    probs_e = ensemble_mean(torch.stack(raw), range(len(teachers)), masks) if len(teachers) > 1 else None
    ensemble_rule = f"mean of {len(teachers)}"
    if d.aggregator == "weighted" and len(teachers) > 1 and len({t.weight for t in named}) > 1:
        # the ensemble the 'weighted' aggregator defines (Fukuda et al., 2017): weights normalised to sum to 1
        w = torch.tensor([t.weight for t in named], dtype=raw[0].dtype)
        w = (w / w.sum()).expand(len(test), -1)  # [N, K]
        probs_e = coverage_mix(torch.stack(raw), w, masks if masks is not None else torch.ones(len(raw), raw[0].shape[1]))
        ensemble_rule = f"weighted mean of {len(teachers)}"
    probs_s = predict_probs([student], test, device)
    probs_b = predict_probs([scratch], test, device) if scratch else None
    rows = []
    for t, pr in zip(named, probs_t):
        with visiting(t.model, device) as where:
            rows.append({"name": t.name, "arch": t.arch, **describe([t.model], test, where, pr)})
    ensemble = None
    if len(teachers) > 1 and (d.teachers_on_device or any(t.device for t in named)):
        # the teachers never sit on one device together: the ensemble's time is theirs in turn
        ensemble = describe(teachers, test, device, probs_e, ms=sum(r["ms_per_1000"] for r in rows))
    elif len(teachers) > 1:
        ensemble = describe(teachers, test, device, probs_e)
    results = {
        "teachers": rows,
        "ensemble": {"rule": ensemble_rule, **ensemble} if ensemble is not None else None,
        "student": {"arch": cfg.student.arch, **describe([student], test, device, probs_s)},
        "scratch": {"arch": cfg.student.arch, **describe([scratch], test, device, probs_b)} if scratch else None,
        "assistants": [{"name": a["name"], "arch": a["arch"], "level": a["level"],
                        **describe([a["model"]], test, device)} for a in assistants],
    }
    if (out / "peers.json").is_file():  # online recipes: the peers trained beside the student
        results["peers"] = json.loads((out / "peers.json").read_text())
    if len(teachers) == 1:
        results["ensemble"] = {k: v for k, v in results["teachers"][0].items() if k not in ("name", "arch")}
    # the teachers the student learned from, named as in the table (a recipe's own teachers too)
    scored = [(t.name, pr) for t, pr in zip(named, probs_t)] + [("ensemble", probs_e)] \
        + [("student (scratch)", probs_b), ("student", probs_s)]
    results.update(calibration_and_agreement([(n, pr) for n, pr in scored if pr is not None], test.y))
    records = run.metrics.read()
    faults = teacher_faults(records)
    for name, count in faults.items():
        log(f"warning: teacher '{name}' failed on {count} batch(es) and was left out of them "
            "(see 'teacher_dropped' in metrics.jsonl)")
    summary = build_summary(cfg, prep.data, results, run.stages, faults)
    recipe_results = out / "student_results.json"  # what a recipe reports beyond the contract (continual)
    if recipe_results.exists():
        summary.update(json.loads(recipe_results.read_text()))
    # what a user of the student needs: the output order's class names and the input steps
    summary["classes"] = list(prep.data.class_names)
    if prep.data.preprocess:
        summary["preprocess"] = prep.data.preprocess
    write_report(out, summary, records, plots=cfg.output.plots)
    write_json(out / "summary.json", summary)  # last: its presence marks the run finished
    for tracker in run.metrics.trackers:
        tracker.finish(summary, out)
        tracker.close()
    return summary
