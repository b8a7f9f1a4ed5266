"""Recipes: one file per training scheme. A recipe is an ``nn.Module`` holding what it trains;
``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates ``"loss"``."""
from __future__ import annotations

from .afd import AfdRecipe
from .assistant import AssistantRecipe
from .codistillation import CodistillationRecipe
from .continual import ContinualRecipe
from .features import FeaturesRecipe
from .ffl import FflRecipe
from .local_targets import LocalTargetsRecipe
from .mutual import MutualRecipe
from .offline import OfflineRecipe
from .okddip import OkddipRecipe
from .progressive import ProgressiveRecipe
from .scratch import ScratchRecipe
from .semi_supervised import SemiSupervisedRecipe
from .tas import TasRecipe
from .teacher_free import TeacherFreeRecipe

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
    "mutual": MutualRecipe,
    "codistillation": CodistillationRecipe,
    "okddip": OkddipRecipe,
    "ffl": FflRecipe,
    "afd": AfdRecipe,
}

__all__ = ["RECIPES", "AfdRecipe", "AssistantRecipe", "CodistillationRecipe", "FflRecipe", "MutualRecipe",
           "OkddipRecipe", "ContinualRecipe", "FeaturesRecipe", "LocalTargetsRecipe", "OfflineRecipe",
           "ProgressiveRecipe", "ScratchRecipe", "SemiSupervisedRecipe", "TasRecipe", "TeacherFreeRecipe"]
