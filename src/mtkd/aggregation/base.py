"""What every aggregator returns."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Aggregate(NamedTuple):
    target: torch.Tensor  # [B, C] soft target for the student; rows sum to 1
    weights: torch.Tensor  # [B, K] weight each teacher got for each sample; rows sum to 1


def softened(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """[K, B, C] logits -> [K, B, C] probabilities at temperature T."""
    return torch.softmax(teacher_logits / temperature, dim=-1)
