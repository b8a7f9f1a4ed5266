"""TAS: teacher -> hybrid assistant -> student, for teachers and students of different architectures.

Li, Wang, Yan, Ding, Gao and Xia, "TAS: Distilling Arbitrary Teacher and Student via a Hybrid
Assistant" (2024, arXiv:2410.12342; v2 "Fuse Before Transfer: Knowledge Fusion for Heterogeneous
Distillation", ICCV 2025). The assistant fuses the two models, whichever is the CNN: the
convolutional model's first blocks, a local-to-global (L2G) projector, then the attention/MLP
model's later blocks and head. Its modules are shared: the student's are the student's own, the
teacher's the frozen teacher's own, so the projector is almost all it adds. Knowledge flows on
three paths, teacher -> assistant, teacher -> student and assistant -> student, each with the OFA
loss on logits (Hao et al., NeurIPS 2023, see ``mtkd.losses.ofa``) and a spatial-agnostic InfoNCE
loss, with a learned temperature, on spatially smoothed features (``mtkd.losses.infonce``).

Stages: the built-in 1-D models' blocks (``mtkd.models.blocks``), or for timm and torchvision image
classifiers the stages found by ``mtkd.models.library_blocks`` (timm's ``feature_info`` stages,
torchvision's ResNet layers / ``features`` modules, a ViT's embedding and blocks), checked to
reproduce the model's output before training. On images the L2G projector sees a CNN stage's map
[C, H, W] as C channels over H*W positions (our 1-D form of the paper's 2-D projector).

Our version for the 1-D models (``mtkd.models.blocks``): a CNN student with a transformer (or GRU,
MLP) teacher gives the student's first conv blocks -> L2G -> the teacher's last layers and head; a
CNN teacher with a transformer student gives the teacher's first conv blocks -> L2G -> the
student's last layers and head. The L2G projector is ``LocalToGlobalProjector``: a patch
embedding (kernel-3 conv, linear map across positions) and one attention block. Several teachers:
the assistant takes its blocks from ``assistant_teacher``; the logit target is what the
configured aggregator makes of all teachers, and the per-teacher InfoNCE terms of the teacher ->
student path are weighted per sample by the aggregator's weights. Each step (f = features of the
last body block, smoothed and flattened; P learned linear maps into the key's space; sg =
stop-gradient; tau = max(exp(theta), 0.01), theta learned):

    loss = (1 - alpha) * (CE(s) + CE(a))
         + alpha * (OFA(s, target) + OFA(a, target) + OFA(s, sg softmax(a)))
         + nce_weight * (sum_k v_k NCE(P_k f_s, f_k) + NCE(P f_a, f_t*) + NCE(P' f_s, sg f_a))

with t* the assistant's teacher. The student alone is kept; the assistant is discarded.
"""
from __future__ import annotations

import copy
import math
from typing import Literal, NamedTuple, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..losses import ce_loss, infonce_loss, infonce_loss_per_sample, ofa_loss, spatial_smooth
from ..models.blocks import Blocks, model_blocks, run_blocks
from ..models.library_blocks import check_composition
from ..models.projectors import LocalToGlobalProjector, Projector, to_channels
from ..teachers import FrozenTeacher
from .base import Traits
from .offline import TeacherTargets


class TasOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    student_blocks: int | None = Field(None, ge=1, description="the student's blocks in the assistant: its first "
                                       "ones when the student goes first, else its last ones (default: half)")
    teacher_blocks: int | None = Field(None, ge=1, description="the teacher's blocks in the assistant: its last "
                                       "ones when the student goes first, else its first ones (default: half)")
    order: Literal["auto", "student_first", "teacher_first"] = Field(
        "auto", description="which model's blocks start the assistant (auto: the convolutional one, as in the paper; "
        "the student when neither or both are convolutional)")
    assistant_teacher: str | None = Field(None, description="teacher whose blocks the assistant copies "
                                          "(default: the first)")
    share_student_blocks: bool = Field(True, description="the assistant uses the student's own blocks "
                                       "(false: a copy)")
    teacher_modules: Literal["shared", "copy"] = Field(
        "shared", description="shared: the assistant runs the frozen teacher's own blocks (the paper's weight "
        "sharing: no extra parameters); copy: a copy of them that the assistant trains")
    projector: Literal["l2g", "conv"] = Field(
        "l2g", description="l2g: patch embedding then an attention block (the paper's local-to-global projector); "
        "conv: the patch embedding alone (local conv, linear map across positions)")
    ofa_gamma: float = Field(1.0, ge=1, description="OFA's target-class exponent gamma (1 = cross-entropy to the teacher)")
    ofa_temperature: float = Field(1.0, gt=0)
    nce_weight: float = Field(1.0, ge=0, description="weight of the InfoNCE feature terms")
    nce_temperature: float = Field(0.1, gt=0, description="InfoNCE temperature (the start value when learned)")
    learn_nce_temperature: bool = Field(True, description="learn the InfoNCE temperature, as the paper does "
                                        "(kept at or above 0.01)")
    smooth_bins: int = Field(1, ge=1, description="positions left after spatial smoothing (1: global average)")


def _convolutional(blocks) -> bool:
    """A model whose blocks keep channel-first feature maps (the 1-D CNN): the "local" side."""
    return blocks.body[0].layout == "channels"


class _Split(NamedTuple):
    student: Blocks
    teacher: Blocks
    teacher_first: bool  # the assistant's order: teacher's first blocks -> projector -> student's last blocks
    student_cut: int  # the student is body[:student_cut] -> body[student_cut:] -> head
    teacher_cut: int  # the same for the assistant's teacher


def _split(options: TasOptions, student: nn.Module, teacher: nn.Module) -> _Split:
    """Where the assistant joins the two models. Student first: the student's first ``student_blocks``
    blocks, then the teacher's last ``teacher_blocks`` blocks and head. Teacher first: the teacher's
    first ``teacher_blocks`` blocks, then the student's last ``student_blocks`` blocks and head."""
    s, t = model_blocks(student), model_blocks(teacher)
    if options.order == "auto":
        teacher_first = _convolutional(t) and not _convolutional(s)
    else:
        teacher_first = options.order == "teacher_first"
    # the first model gives its first half (rounded up), the second its last half (at least 1 block)
    first_half = lambda n: (n + 1) // 2  # noqa: E731
    last_half = lambda n: max(1, n // 2)  # noqa: E731
    ns = options.student_blocks or (last_half if teacher_first else first_half)(len(s.body))
    nt = options.teacher_blocks or (first_half if teacher_first else last_half)(len(t.body))
    if ns > len(s.body):
        raise ConfigError(f"distill.student_blocks: {ns}, but the student has {len(s.body)} blocks")
    if nt > len(t.body):
        raise ConfigError(f"distill.teacher_blocks: {nt}, but the assistant's teacher has {len(t.body)} blocks")
    if teacher_first:
        return _Split(s, t, True, len(s.body) - ns, nt)
    return _Split(s, t, False, ns, len(t.body) - nt)


@torch.no_grad()
def _shape_and_layout(stages, example: torch.Tensor) -> tuple[tuple[int, ...], str]:
    """Per-sample shape and layout of the output of ``stages`` (the input itself if there are none)."""
    x = example.unsqueeze(1) if example.dim() == 2 else example  # [B, C, L], as first blocks take it
    if not stages:
        return tuple(x.shape[1:]), "channels"
    return tuple(run_blocks(stages, x).shape[1:]), stages[-1].layout


def _embedding(x: torch.Tensor, layout: str, bins: int) -> torch.Tensor:
    """Features [B, ...] -> channel-first, averaged over positions into ``bins`` -> [B, C * bins]."""
    return spatial_smooth(to_channels(x, layout), bins)


MIN_NCE_TEMPERATURE = 0.01  # a learned temperature is kept above this (CLIP's bound on its logit scale, 1/100)


def _trainable_copy(stages) -> nn.ModuleList:
    """A copy of a frozen teacher's stages that the assistant trains (the teacher itself stays frozen)."""
    copied = copy.deepcopy(nn.ModuleList(stages))
    copied.requires_grad_(True)
    return copied


def _teacher_part(stages, mode: str):
    """The assistant's part taken from the teacher: the frozen teacher's own stages (a plain list, so
    that they are not registered, trained, saved or switched to train mode with the recipe) or a copy."""
    return list(stages) if mode == "shared" else _trainable_copy(stages)


class TasRecipe(nn.Module):
    description = "TAS: hybrid assistant (convolutional blocks, local-to-global projector, attention/MLP blocks), " \
                  "OFA + InfoNCE (Li et al. 2024)"
    traits = Traits(needs_teachers=True, uses_aggregator=True, uses_unlabeled=True, checks_models=True)
    Options = TasOptions

    def __init__(self, student: nn.Module, teachers: Sequence[FrozenTeacher], aggregator: nn.Module,
                 temperature: float = 4.0, alpha: float = 0.9, options: TasOptions | None = None,
                 on_teacher_error: str = "stop", example: torch.Tensor | None = None):
        super().__init__()
        self.options = o = options or TasOptions()
        if example is None:
            raise ConfigError("recipe 'tas' needs an example input to size its projectors")
        if on_teacher_error != "stop":
            raise ConfigError("distill.on_teacher_error: recipe 'tas' reads the teachers' inner blocks and "
                              "supports only 'stop'")
        self.events: list[dict] = []
        self.student, self.aggregator, self.teachers = student, aggregator, list(teachers)
        self.temperature, self.alpha = temperature, alpha  # temperature: for aggregators that use it (meta)
        # the aggregator and its view of the student (feature hook, look-ahead updates such as meta's)
        self.targets = TeacherTargets(teachers, aggregator, student, temperature)
        names = [t.name for t in self.teachers]
        if o.assistant_teacher is not None and o.assistant_teacher not in names:
            raise ConfigError(f"distill.assistant_teacher: no teacher named {o.assistant_teacher!r}; "
                              f"teachers are: {', '.join(names)}")
        self.source = names.index(o.assistant_teacher) if o.assistant_teacher else 0
        split = _split(o, student, self.teachers[self.source].model)
        s, t, cut = split.student, split.teacher, split.student_cut
        self.teacher_first = split.teacher_first
        self.early, self.rest, self.head = s.body[:cut], s.body[cut:], s.head  # the student's own modules
        self.teacher_blocks = [model_blocks(tt.model) for tt in self.teachers]
        own = lambda stages: nn.ModuleList(stages if o.share_student_blocks else copy.deepcopy(stages))  # noqa: E731
        # the assistant: first blocks -> local-to-global projector (bridge) -> later blocks -> head
        if self.teacher_first:  # teacher's first (convolutional) blocks, student's later blocks and head
            self.assistant_early = _teacher_part(t.body[:split.teacher_cut], o.teacher_modules)
            self.assistant_late = own(s.body[cut:] + [s.head])
        else:  # student's first blocks, teacher's later blocks and head
            self.assistant_early = own(s.body[:cut])
            self.assistant_late = _teacher_part(t.body[split.teacher_cut:] + [t.head], o.teacher_modules)
        self.teacher_cut = split.teacher_cut
        ex = example[:2].to(next(student.parameters()).device)
        was_training = student.training
        student.eval()
        s_mid, s_mid_layout = _shape_and_layout(self.early, ex)
        s_out, s_out_layout = _shape_and_layout(s.body, ex)
        student.train(was_training)
        teacher_ex = [ex.to(tt.device) for tt in self.teachers]  # teachers may already sit on the GPU
        t_mid, t_mid_layout = _shape_and_layout(t.body[:split.teacher_cut], teacher_ex[self.source])
        # the bridge: [B, *first model's features at the cut] -> [B, *later model's features at the cut]
        ends = (t_mid, t_mid_layout, s_mid, s_mid_layout) if self.teacher_first else (s_mid, s_mid_layout, t_mid, t_mid_layout)
        self.bridge = LocalToGlobalProjector(*ends) if o.projector == "l2g" else \
            Projector(*ends, kernel=3, mix_positions=True)
        a_layout = s_out_layout if self.teacher_first else t.body[-1].layout
        self.layouts = {"student": s_out_layout, "assistant": a_layout}
        bins = o.smooth_bins
        dim = lambda shape, layout: _embedding(torch.zeros(1, *shape), layout, bins).shape[1]  # noqa: E731
        s_dim = dim(s_out, s_out_layout)
        t_dims = [dim(_shape_and_layout(tb.body, e)[0], tb.body[-1].layout) for tb, e in zip(self.teacher_blocks, teacher_ex)]
        a_dim = s_dim if self.teacher_first else t_dims[self.source]  # the assistant ends in the later model's blocks
        self.student_to_teacher = nn.ModuleList(nn.Linear(s_dim, d) for d in t_dims)  # P_k
        self.assistant_to_teacher = nn.Linear(a_dim, t_dims[self.source])  # P
        self.student_to_assistant = nn.Linear(s_dim, a_dim)  # P'
        if o.learn_nce_temperature:  # one temperature for the three paths' InfoNCE terms
            self.log_nce_temperature = nn.Parameter(torch.tensor(math.log(o.nce_temperature)))

    @staticmethod
    def check_models(cfg, student: nn.Module, teachers: list[tuple[str, nn.Module]],
                     input_shape, num_classes: int) -> None:
        """Student and teachers split into blocks, and the split points exist, before any training."""
        options, names = cfg.recipe_options, [n for n, _ in teachers]
        if cfg.distill.on_teacher_error != "stop":
            raise ConfigError("distill.on_teacher_error: recipe 'tas' reads the teachers' inner blocks and "
                              "supports only 'stop'")
        if options.assistant_teacher is not None and options.assistant_teacher not in names:
            raise ConfigError(f"distill.assistant_teacher: no teacher named {options.assistant_teacher!r}; "
                              f"teachers are: {', '.join(names)}")
        source = names.index(options.assistant_teacher) if options.assistant_teacher else 0
        for name, model in [("student", student)] + [(f"teachers ({n})", m) for n, m in teachers]:
            # library models (timm, torchvision): the stages found must reproduce the model's output
            check_composition(model, model_blocks(model), input_shape, name)
        _split(options, student, teachers[source][1])

    @torch.no_grad()
    def _teachers(self, x: torch.Tensor, index: torch.Tensor | None):
        """Every teacher's last-block features (list of [B, ...]), logits [K, B, C] and the assistant's
        teacher's features at the cut [B, ...]."""
        feats, logits, mid = [], [], None
        for k, (t, blocks) in enumerate(zip(self.teachers, self.teacher_blocks)):
            t.model.eval()
            xt = x.to(t.device)
            if k == self.source:
                mid = run_blocks(blocks.body[:self.teacher_cut], xt)
                f = run_blocks(blocks.body[self.teacher_cut:], mid)
            else:
                f = run_blocks(blocks.body, xt)
            out = blocks.head(f)
            t.validate(out, len(x), index)
            feats.append(f.to(x.device))
            logits.append(out.to(x.device))
        return feats, torch.stack(logits), mid

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None) -> dict[str, torch.Tensor]:
        o = self.options
        t_feats, teacher_logits, t_mid = self._teachers(x, index)
        alive = torch.ones(len(self.teachers), dtype=torch.bool, device=x.device)
        self.targets.before_step(x, y, teacher_logits, alive, lambda logits, kd: (1 - self.alpha) * ce_loss(logits, y) + self.alpha * kd)
        mid = run_blocks(self.early, x)  # student's blocks before the cut
        f_s = run_blocks(self.rest, mid)
        s_logits = self.head(f_s)  # [B, C], the same as student(x)
        # the assistant's first part: [B, *first model's features at the cut]
        if self.teacher_first:  # the frozen teacher's own blocks computed them already
            a_mid = t_mid.to(x.device) if o.teacher_modules == "shared" else run_blocks(self.assistant_early, x)
        else:  # the student's own blocks computed them already
            a_mid = mid if o.share_student_blocks else run_blocks(self.assistant_early, x)
        h = self.bridge(a_mid)  # [B, *later model's features at the cut]
        # the later part: the student's blocks, or the teacher's (frozen when shared: gradients flow through them
        # to the projector and the student's first blocks), on that model's device
        device = self.teachers[self.source].device if not self.teacher_first else x.device
        f_a = run_blocks(self.assistant_late[:-1], h.to(device))  # [B, *later model's last features]
        a_logits = self.assistant_late[-1](f_a).to(x.device)  # [B, C]
        f_a = f_a.to(x.device)

        agg = self.targets.aggregate(s_logits, teacher_logits, y, alive, o.ofa_temperature)
        target, weights = agg.target, agg.weights  # [B, C], [B, K]
        T, g = o.ofa_temperature, o.ofa_gamma
        ofa_ts = ofa_loss(s_logits, target, y, g, T)
        ofa_ta = ofa_loss(a_logits, target, y, g, T)
        ofa_as = ofa_loss(s_logits, torch.softmax(a_logits.detach() / T, -1), y, g, T)

        bins = o.smooth_bins
        # a fixed temperature is used as given (exp(log tau) would differ from it in the last bit)
        tau = self.log_nce_temperature.exp().clamp_min(MIN_NCE_TEMPERATURE) if o.learn_nce_temperature \
            else o.nce_temperature
        e_s = _embedding(f_s, self.layouts["student"], bins)  # [B, Ds]
        e_a = _embedding(f_a, self.layouts["assistant"], bins)  # [B, Da]
        e_t = [_embedding(f, b.body[-1].layout, bins) for f, b in zip(t_feats, self.teacher_blocks)]
        w = weights.detach()
        per_teacher = torch.stack([infonce_loss_per_sample(p(e_s), e, tau)
                                   for p, e in zip(self.student_to_teacher, e_t)], dim=1)  # [B, K]
        nce_ts = (w * per_teacher).sum(1).mean()
        nce_ta = infonce_loss(self.assistant_to_teacher(e_a), e_t[self.source], tau)
        nce_as = infonce_loss(self.student_to_assistant(e_s), e_a.detach(), tau)

        ce_s, ce_a = ce_loss(s_logits, y), ce_loss(a_logits, y)
        loss = ((1 - self.alpha) * (ce_s + ce_a) + self.alpha * (ofa_ts + ofa_ta + ofa_as)
                + o.nce_weight * (nce_ts + nce_ta + nce_as))
        losses = {"loss": loss, "ce": ce_s, "kd": ofa_ts, "ce_assistant": ce_a, "ofa_teacher_assistant": ofa_ta,
                  "ofa_assistant_student": ofa_as, "nce_teacher_student": nce_ts, "nce_teacher_assistant": nce_ta,
                  "nce_assistant_student": nce_as,
                  "nce_temperature": torch.as_tensor(tau, dtype=torch.float32, device=x.device).detach()}
        return self.targets.log_terms(losses, weights)
