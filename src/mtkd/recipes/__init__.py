"""Recipes: one file per training scheme. A recipe is an ``nn.Module`` holding what it trains;
``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates ``"loss"``."""
from __future__ import annotations

from .assistant import AssistantRecipe
from .features import FeaturesRecipe
from .offline import OfflineRecipe
from .scratch import ScratchRecipe
from .semi_supervised import SemiSupervisedRecipe
from .tas import TasRecipe

RECIPES = {
    "scratch": ScratchRecipe,
    "offline": OfflineRecipe,
    "semi_supervised": SemiSupervisedRecipe,
    "features": FeaturesRecipe,
    "tas": TasRecipe,
    "assistant": AssistantRecipe,
}

__all__ = ["RECIPES", "AssistantRecipe", "FeaturesRecipe", "OfflineRecipe", "ScratchRecipe", "SemiSupervisedRecipe",
           "TasRecipe"]
