"""Recipes: one file per training scheme. A recipe is an ``nn.Module`` holding what it trains;
``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates ``"loss"``."""
from __future__ import annotations

from .continual import ContinualRecipe
from .local_targets import LocalTargetsRecipe
from .assistant import AssistantRecipe
from .features import FeaturesRecipe
from .offline import OfflineRecipe
from .progressive import ProgressiveRecipe
from .scratch import ScratchRecipe
from .semi_supervised import SemiSupervisedRecipe
from .teacher_free import TeacherFreeRecipe
from .tas import TasRecipe

RECIPES = {
    "scratch": ScratchRecipe,
    "offline": OfflineRecipe,
    "semi_supervised": SemiSupervisedRecipe,
    "teacher_free": TeacherFreeRecipe,
    "progressive": ProgressiveRecipe,
    "local_targets": LocalTargetsRecipe,
    "continual": ContinualRecipe,
    "features": FeaturesRecipe,
    "tas": TasRecipe,
    "assistant": AssistantRecipe,
}

__all__ = ["RECIPES", "AssistantRecipe", "ContinualRecipe", "FeaturesRecipe", "LocalTargetsRecipe", "OfflineRecipe",
           "ProgressiveRecipe", "ScratchRecipe", "SemiSupervisedRecipe", "TasRecipe", "TeacherFreeRecipe"]
