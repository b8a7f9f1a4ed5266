"""Routing: each sample (or token) is taught by the teacher(s) chosen for it, not by a blend of all.

``by: domain`` -- the routing of multi-teacher on-policy distillation (MOPD: Ma et al., "MOPD:
Multi-Teacher On-Policy Distillation for Capability Integration in LLM Post-Training",
arXiv:2606.30406, 2026; shipped in NeMo RL, verl and ms-swift in 2026): every sample carries a
domain (a language model's text domain: code, prose, ...) and is distilled from the expert
teacher(s) of that domain only. The config maps each domain to its teachers,
``map: {code: [code_expert], prose: [prose_expert]}``; a domain with several teachers gets the
mean of their probabilities at temperature T (weights 1/|teachers of the domain|, 0 for the
others; MOPD has one teacher per domain). Here routing only chooses the target: the loss and
whether the batch is the data set or the student's own samples (``distill.on_policy``) are set
apart, where MOPD trains on the student's rollouts with a reverse-KL token advantage. Every
domain of the data must be mapped to at least one teacher, and every name in the map must be a
domain of the data and a teacher of the run: anything else is refused when the config is loaded
(``check_config``), before anything is written.

``by: min_loss`` -- per sample, the one teacher with the lowest cross-entropy on the sample's
label (for a language model: on the next token) gets weight 1: the "one teacher chosen per
sample" objective, with the teacher's own loss on the sample as the selection rule. Related
selection rules: Gao, Parcollet and Lane ("Distilling Knowledge from Ensembles of Acoustic
Models for Joint CTC-Attention End-to-End Speech Recognition", arXiv:2005.09310) select the
teachers of each utterance by their error rate rather than solely by the observed losses; Yuan
et al. ("Reinforced Multi-Teacher Selection for Knowledge Distillation", AAAI 2021) learn the
selection with reinforcement learning. Cross-entropy is measured at T = 1 (the teachers' own
predictions): the label is scored by each teacher, not by the softened target.
On an **unlabeled** sample (label -1; e.g. the student's own continuation in on-policy mode, or
an unlabeled transfer pool) there is no label to score, so the teacher with the lowest entropy
of its prediction is chosen instead: a teacher's entropy is its expected cross-entropy on a
label drawn from its own prediction, the only loss each teacher can compute there; it prefers
confident teachers, which may be confidently wrong, so labeled data routes better. Ties go to
the teacher listed first.

Where samples get domains: the data set names them (``data.name: text`` with ``data.domains``),
and the training step passes ``domains=`` LongTensor [B] (index into
``AggregatorContext.domain_names``) to the call. Classification data sets carry no domains:
``by: domain`` is refused for them with one line (use ``by: min_loss``, which needs only labels).

Every call records, per teacher, the fraction of samples (tokens) routed to it
(``route/<teacher>`` in the metrics), next to the mean weight every aggregator logs.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import ConfigError
from ..schema import did_you_mean
from .base import Aggregate, AggregatorContext, Capabilities, labeled_mask, mix, softened


class RouteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    by: Literal["domain", "min_loss"] = Field(
        "min_loss", description="domain = each sample's domain's teachers (needs map); min_loss = per sample the "
        "teacher with the lowest cross-entropy on its label (lowest entropy on unlabeled samples)")
    map: dict[str, list[str]] | None = Field(
        None, description="with by: domain, {domain: [teacher names]}; every domain of the data needs a teacher")


def teacher_names_of(ctx: AggregatorContext) -> tuple[str, ...]:
    return tuple(ctx.teacher_names) or tuple(getattr(t, "name", f"teacher{i}") for i, t in enumerate(ctx.teachers))


def check_route(options: RouteOptions, teacher_names: Sequence[str], domain_names: Sequence[str] | None,
                data_name: str = "this data set") -> None:
    """Refuse (ConfigError, one line) a routing config that cannot route every sample.

    domain_names: the data set's domains, in order; None when the data set has none (classification)."""
    if options.by != "domain":
        if options.map is not None:
            raise ConfigError("distill.aggregator.map: only used with by: domain (by is 'min_loss'); remove map "
                              "or set by: domain")
        return
    if domain_names is None or not len(domain_names):
        raise ConfigError(f"distill.aggregator.by: domain needs a data set whose samples have domains "
                          f"(data.name: text with data.domains); {data_name} has none, use by: min_loss")
    if not options.map:
        raise ConfigError(f"distill.aggregator.map: by: domain needs a map from each domain to its teachers, e.g. "
                          f"map: {{{domain_names[0]}: [{teacher_names[0] if teacher_names else 'teacher'}]}}")
    for domain, names in options.map.items():
        if domain not in domain_names:
            raise ConfigError(f"distill.aggregator.map: unknown domain {domain!r}{did_you_mean(domain, domain_names)}"
                              f"; the data's domains are {', '.join(domain_names)}")
        if not names:
            raise ConfigError(f"distill.aggregator.map.{domain}: no teacher; list at least one of "
                              f"{', '.join(teacher_names)}")
        for name in names:
            if name not in teacher_names:
                raise ConfigError(f"distill.aggregator.map.{domain}: unknown teacher {name!r}"
                                  f"{did_you_mean(name, teacher_names)}; teachers are {', '.join(teacher_names)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"distill.aggregator.map.{domain}: a teacher is listed twice ({names}); list each once")
    missing = [d for d in domain_names if d not in options.map]
    if missing:
        raise ConfigError(f"distill.aggregator.map: domain {missing[0]!r} has no teacher; add "
                          f"{missing[0]}: [<teacher names>] to the map")


def domain_weights(options: RouteOptions, teacher_names: Sequence[str], domain_names: Sequence[str]) -> torch.Tensor:
    """[D, K]: row d = 1/n on the n teachers of domain d, 0 elsewhere (rows sum to 1)."""
    table = torch.zeros(len(domain_names), len(teacher_names))
    for d, domain in enumerate(domain_names):
        names = options.map[domain]
        for name in names:
            table[d, list(teacher_names).index(name)] = 1.0 / len(names)
    return table


def min_loss_choice(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """teacher_logits [K, B, C], labels [B] (-1 = unlabeled) -> chosen teacher per sample [B].

    Labeled: argmin_k -log p_k(y) (T = 1). Unlabeled: argmin_k H(p_k). Ties: the first teacher."""
    logp = torch.log_softmax(teacher_logits.float(), dim=-1)  # [K, B, C]
    labeled = labeled_mask(labels)  # [B]
    y = labels.clamp_min(0).view(1, -1, 1).expand(logp.shape[0], -1, 1)
    cross_entropy = -logp.gather(-1, y).squeeze(-1)  # [K, B]
    entropy = -(logp.exp() * logp).sum(-1)  # [K, B]; exp(-inf) * -inf is nan only if p = 0 exactly:
    entropy = torch.nan_to_num(entropy, nan=0.0)  # a probability 0 contributes 0 log 0 = 0
    loss = torch.where(labeled.unsqueeze(0), cross_entropy, entropy)  # [K, B]
    return loss.argmin(0)  # argmin returns the first index among equal minima


class RouteAggregator(nn.Module):
    description = "routing: each sample's domain teachers (by: domain, MOPD) or its lowest-loss teacher (by: min_loss)"
    Options = RouteOptions
    capabilities = Capabilities(logs=True)  # logged(): route/<teacher>, the share each teacher taught

    def __init__(self, ctx: AggregatorContext, options: RouteOptions | None = None):
        super().__init__()
        self.options = options or RouteOptions()
        self.teacher_names = teacher_names_of(ctx)
        self.domain_names = tuple(ctx.domain_names)
        check_route(self.options, self.teacher_names, self.domain_names or None)
        if self.options.by == "domain":
            self.register_buffer("table", domain_weights(self.options, self.teacher_names, self.domain_names))
        self._logged: dict[str, torch.Tensor] = {}

    @staticmethod
    def check_config(options: RouteOptions, teacher_names: Sequence[str], domain_names: Sequence[str] | None,
                     data_name: str) -> None:
        """Called by the config loader with the run's teachers and the data set's domains."""
        check_route(options, teacher_names, domain_names, data_name)

    def forward(self, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                domains: torch.Tensor | None = None, **_) -> Aggregate:
        """teacher_logits [K, B, C]; labels [B]; domains [B] (by: domain) -> target [B, C], weights [B, K]."""
        k = teacher_logits.shape[0]
        if self.options.by == "domain":
            if domains is None:
                raise ValueError("aggregator 'route' by domain needs domains= [B] (each sample's domain index)")
            weights = self.table.to(teacher_logits.device, teacher_logits.dtype)[domains.long()]  # [B, K]
        else:
            choice = min_loss_choice(teacher_logits, labels)  # [B]
            weights = nn.functional.one_hot(choice, k).to(teacher_logits.dtype)  # [B, K]
        routed = (weights > 0).to(torch.float32).mean(0).detach()  # [K]: share of samples each teacher taught
        self._logged = {f"route/{name}": routed[i] for i, name in enumerate(self.teacher_names[:k])}
        return Aggregate(mix(softened(teacher_logits, temperature), weights), weights)

    def logged(self) -> dict[str, torch.Tensor]:
        return self._logged
