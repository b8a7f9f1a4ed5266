"""Shared pieces of the model configs."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    num_classes: int | None = Field(None, ge=2, description="classes; default: the data set's")


def as_sequence(input_shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    """(channels, length) of a 1-D input: [L] is one channel, [C, L] is C channels."""
    if len(input_shape) == 1:
        return 1, input_shape[0]
    if len(input_shape) == 2:
        return input_shape[0], input_shape[1]
    raise ConfigError(f"model '{arch}' needs 1-D inputs of shape [length] or [channels, length], "
                      f"got {list(input_shape)}; use 'mlp' or 'cnn2d' for images")
