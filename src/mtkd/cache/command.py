"""``mtkd cache CONFIG``: train any teacher that has no checkpoint, then compute and store every
teacher's outputs on the transfer set, so later ``mtkd run`` calls (with ``distill.cache:
auto`` or ``always``) only read them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import Config
from ..errors import ConfigError
from ..models.files import load_model_file
from ..pipeline import Run, check_free_space, open_run_dir, prepare
from ..recipes import RECIPES
from ..rundir import precheck, release
from .build import build_cache, options_from


def cache_command(cfg: Config, out: str | Path, progress: bool = True, log: Callable[[str], None] = print,
                  force: bool = False) -> list[dict]:
    """Build (or verify and reuse) the cache entries of ``cfg``'s teachers; one row per teacher."""
    import torch

    out = Path(out)
    precheck(out)
    d = cfg.distill
    traits = RECIPES[d.recipe].traits
    if not traits.needs_teachers:
        raise ConfigError(f"distill.recipe: {d.recipe!r} uses no teachers; there is nothing to cache")
    if not traits.cacheable:
        raise ConfigError(f"distill.recipe: {d.recipe!r} cannot use cached teacher outputs (its teachers see "
                          "inputs other than the fixed transfer set)")
    if getattr(cfg.data, "augment", None) and not d.cache_views:
        raise ConfigError("distill.cache_views: data.augment makes every view random; set cache_views "
                          "(views recorded per sample) to cache the teachers' outputs on recorded views")
    if d.threads:
        torch.set_num_threads(d.threads)
    prep = prepare(cfg)
    cfg_dict = cfg.to_dict()
    cfg_dict["output"]["dir"] = str(out)
    check_free_space(out, prep)
    open_run_dir(out, cfg_dict, restart=False, force=force)
    try:
        report = _build(cfg, prep, out, progress, log, force)
    finally:
        release(out)
    rows = []
    for e in report.entries:
        rows.append({"teacher": e.teacher, "entry": str(e.path), "samples": e.manifest["num_samples"],
                     "storage": e.manifest["storage"], "mib": round(e.bytes / 2**20, 3),
                     "built": e.teacher in report.built, "seconds": round(report.seconds.get(e.teacher, 0.0), 2),
                     **({"topk_error": e.manifest["topk_error"]} if "topk_error" in e.manifest else {})})
    return rows


def _build(cfg: Config, prep, out: Path, progress: bool, log, force: bool):
    d = cfg.distill
    run = Run(prep, out, progress, log, force)

    def loader(i, plan):
        # memory-aware: a teacher stored in a file is read only when its turn comes, and released after
        path = plan.spec.checkpoint or out / "teachers" / f"{plan.spec.name}.pt"
        if plan.model is None and Path(path).is_file():
            return lambda: load_model_file(path)[0]
        return lambda: run.teacher(i, plan)

    loaders = [(plan.spec.name, loader(i, plan)) for i, plan in enumerate(prep.teachers)]
    root = d.cache_dir or out / "teacher_cache"
    if prep.data.augment is not None:  # random views: only recorded views can be cached (mtkd.cache.views)
        from .views import ViewSource, build_view_entries

        transfer = prep.data.transfer_set()
        source = ViewSource(transfer.x, transfer.index, prep.data.augment, cfg.seed, d.cache_views)
        report = build_view_entries(loaders, source, root, options_from(d), prep.device, log)
    else:
        report = build_cache(loaders, prep.data.transfer_set(), root, options_from(d), prep.device,
                             preprocessing="inputs as stored", log=log)
    return report
