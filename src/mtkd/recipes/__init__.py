"""Recipes: one file per training scheme. A recipe is an ``nn.Module`` holding what it trains;
``step(x, y, index)`` returns a dict of named losses, the trainer backpropagates ``"loss"``."""
from __future__ import annotations

from .continual import ContinualRecipe
from .local_targets import LocalTargetsRecipe
from .offline import OfflineRecipe
from .progressive import ProgressiveRecipe
from .scratch import ScratchRecipe
from .semi_supervised import SemiSupervisedRecipe
from .teacher_free import TeacherFreeRecipe

RECIPES = {
    "scratch": ScratchRecipe,
    "offline": OfflineRecipe,
    "semi_supervised": SemiSupervisedRecipe,
    "teacher_free": TeacherFreeRecipe,
    "progressive": ProgressiveRecipe,
    "local_targets": LocalTargetsRecipe,
    "continual": ContinualRecipe,
}

__all__ = ["RECIPES", "ContinualRecipe", "LocalTargetsRecipe", "OfflineRecipe", "ProgressiveRecipe", "ScratchRecipe", "SemiSupervisedRecipe", "TeacherFreeRecipe"]
