"""Option schemas shared by every component, in a leaf module (it imports nothing of mtkd),
so data sets, models, aggregators and recipes can declare their options without importing
the config loader."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    """Options schema of a component that takes none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
