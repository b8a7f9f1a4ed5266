"""Recipes: one file per training scheme. A recipe is an ``nn.Module`` holding what it trains;
``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates ``"loss"``."""
from __future__ import annotations

from .afd import AfdRecipe
from .codistillation import CodistillationRecipe
from .ffl import FflRecipe
from .mutual import MutualRecipe
from .offline import OfflineRecipe
from .okddip import OkddipRecipe
from .scratch import ScratchRecipe
from .semi_supervised import SemiSupervisedRecipe

RECIPES = {
    "scratch": ScratchRecipe,
    "offline": OfflineRecipe,
    "semi_supervised": SemiSupervisedRecipe,
    "mutual": MutualRecipe,
    "codistillation": CodistillationRecipe,
    "okddip": OkddipRecipe,
    "ffl": FflRecipe,
    "afd": AfdRecipe,
}

__all__ = ["RECIPES", "AfdRecipe", "CodistillationRecipe", "FflRecipe", "MutualRecipe", "OkddipRecipe", "OfflineRecipe", "ScratchRecipe", "SemiSupervisedRecipe"]
