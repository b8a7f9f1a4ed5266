"""Feature-level multi-teacher distillation: KD on logits plus FitNet hints from intermediate
layers of one or more teachers, each through a learned projector.

Hints: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015, arXiv:1412.6550); several
layers at once (hierarchical, multi-level transfer), several teachers at once. Layers are
named as in ``model.named_modules()`` and read with forward hooks (``mtkd.models.layers``), so
no model is rewritten; a projector (``mtkd.models.projectors.Projector``, trained with the
student and saved in checkpoints) maps the student's feature to each teacher's shape and layout.
Each step:

    loss = (1 - alpha) * CE + alpha * KD(aggregate(teachers))
           + hint_weight * sum_l w_l * mean_b sum_{k in K_l} v_bk * MSE(P_lk(f^s_l(x_b)), f^k_l(x_b))

K_l are the teachers that have a hint at level l, v_bk the aggregator's weight of teacher k
for sample b renormalised over K_l (so any aggregator that gives per-teacher weights also
weighs the hints), w_l the level's own ``weight``. ``hints`` defaults to one level: the
penultimate features (input of the final linear layer) of the student and of every teacher.
"""
from __future__ import annotations

from dataclasses import replace

from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss, hint_loss_per_sample
from ..models.layers import LayerFeatures, find_layer
from ..models.projectors import Projector
from ..teachers import FrozenTeacher
from .offline import OfflineRecipe


class HintSpec(BaseModel):
    """One hint level: a student layer and the teacher layer(s) it learns from."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    student: str | None = Field(None, description="student layer name; null = penultimate features")
    teacher: str | dict[str, str | None] | None = Field(
        None, description="teacher layer name for every teacher, or {teacher name: layer}; null = penultimate")
    weight: float = Field(1.0, ge=0)


class FeaturesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    hints: list[HintSpec] = Field(default_factory=lambda: [HintSpec()], min_length=1,
                                  description="hint levels: [{student: layer, teacher: layer or {name: layer}}]")
    hint_weight: float = Field(1.0, ge=0, description="loss = (1 - alpha) * CE + alpha * KD + hint_weight * hints")
    projector_kernel: int = Field(1, ge=1, description="kernel of the projectors' convolution (1 = FitNet's 1x1)")


@torch.no_grad()
def probe(model: nn.Module, example: torch.Tensor) -> None:
    """One forward pass in eval mode, so forward hooks record the shapes of their layers."""
    was_training = model.training
    model.eval()
    model(example)
    model.train(was_training)


def teacher_layers(hint: HintSpec, teachers: Sequence[FrozenTeacher], level: int) -> dict[int, str | None]:
    """{teacher index: layer name} of one hint level."""
    if not isinstance(hint.teacher, dict):
        return {k: hint.teacher for k in range(len(teachers))}
    names = [t.name for t in teachers]
    unknown = [n for n in hint.teacher if n not in names]
    if unknown:
        raise ConfigError(f"distill.hints[{level}].teacher: no teacher named {unknown[0]!r}; "
                          f"teachers are: {', '.join(names)}")
    return {names.index(n): layer for n, layer in hint.teacher.items()}


class FeaturesRecipe(OfflineRecipe):
    description = "KD + FitNet hints from named layers of several teachers, learned projectors (Romero et al. 2015)"
    traits = replace(OfflineRecipe.traits, cacheable=False, checks_models=True)  # hints run the teachers' hidden layers
    Options = FeaturesOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: FeaturesOptions | None = None,
                 on_teacher_error: str = "stop", example: torch.Tensor | None = None):
        super().__init__(student, teachers, aggregator, temperature, alpha, on_teacher_error=on_teacher_error)
        self.options = options or FeaturesOptions()
        if example is None:
            raise ConfigError("recipe 'features' needs an example input to size its projectors")
        hints = self.options.hints
        self.levels = [teacher_layers(h, self.teachers, i) for i, h in enumerate(hints)]
        self.student_feats = LayerFeatures(student, [h.student for h in hints], "student")
        self.teacher_feats = [LayerFeatures(t.model, [lv[k] for lv in self.levels if k in lv],
                                            f"teacher '{t.name}'") for k, t in enumerate(self.teachers)]
        example = example[:2].to(next(student.parameters()).device)
        probe(student, example)
        for t in self.teachers:
            probe(t.model, example.to(t.device))
        self.projectors = nn.ModuleDict()  # "l{level}_t{teacher}": student feature -> teacher feature shape
        for i, (hint, layers) in enumerate(zip(hints, self.levels)):
            s_value, s_layout = self.student_feats.values[hint.student], self.student_feats.layout(hint.student)
            for k, layer in layers.items():
                feats = self.teacher_feats[k]
                self.projectors[f"l{i}_t{k}"] = Projector(s_value.shape[1:], s_layout, feats.values[layer].shape[1:],
                                                          feats.layout(layer), kernel=self.options.projector_kernel)

    @staticmethod
    def check_models(cfg, student: nn.Module, teachers: list[tuple[str, nn.Module]],
                     input_shape, num_classes: int) -> None:
        """Every hint layer exists (an error lists the model's layer names), before any training."""
        options, names = cfg.recipe_options, [n for n, _ in teachers]
        for i, hint in enumerate(options.hints):
            find_layer(student, hint.student, f"distill.hints[{i}].student")
            layers = hint.teacher if isinstance(hint.teacher, dict) else {n: hint.teacher for n in names}
            for name, layer in layers.items():
                if name not in names:
                    raise ConfigError(f"distill.hints[{i}].teacher: no teacher named {name!r}; "
                                      f"teachers are: {', '.join(names)}")
                find_layer(dict(teachers)[name], layer, f"distill.hints[{i}].teacher ({name})")

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        teacher_logits, alive = self.targets.teacher_logits(x, index)  # also fills the teachers' hooked features
        self.targets.before_step(x, y, teacher_logits, alive, lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
        student_logits = self.student(x)  # [B, C]; fills the student's hooked features
        kd, weights = self.targets.kd(student_logits, teacher_logits, y, alive)
        ce = ce_loss(student_logits, y)
        hints = student_logits.sum() * 0.0
        w = weights.detach()  # [B, K]
        for i, (hint, layers) in enumerate(zip(self.options.hints, self.levels)):
            ks = [k for k in layers if bool(alive[k])]
            if not ks:
                continue
            s_feat = self.student_feats.values[hint.student]
            v = w[:, ks] / w[:, ks].sum(1, keepdim=True).clamp_min(1e-12)  # [B, |K_l|], rows sum to 1
            per_sample = torch.stack([
                hint_loss_per_sample(self.projectors[f"l{i}_t{k}"](s_feat), self.teacher_feats[k].values[layers[k]])
                for k in ks], dim=1)  # [B, |K_l|]
            hints = hints + hint.weight * (v * per_sample).sum(1).mean()
        loss = (1 - self.alpha) * ce + self.alpha * kd + self.options.hint_weight * hints
        losses = {"loss": loss, "ce": ce, "kd": kd, "hint": hints}
        return self.targets.log_terms(losses, weights)
