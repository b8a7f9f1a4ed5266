"""Shared pieces of the model configs."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    num_classes: int | None = Field(None, ge=2, description="classes; default: the data set's")


class AttentionConfig(ModelConfig):
    """The size keys every attention model shares; the heads must divide the width."""

    dim: int = Field(32, ge=1, description="width of the residual stream")
    heads: int = Field(4, ge=1, description="attention heads (must divide dim)")
    layers: int = Field(2, ge=1, description="transformer blocks")
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_dim(self):
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self


def as_sequence(input_shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    """(channels, length) of a 1-D input: [L] is one channel, [C, L] is C channels."""
    if len(input_shape) == 1:
        return 1, input_shape[0]
    if len(input_shape) == 2:
        return input_shape[0], input_shape[1]
    raise ConfigError(f"model '{arch}' needs 1-D inputs of shape [length] or [channels, length], "
                      f"got {list(input_shape)}; use 'mlp' or 'cnn2d' for images")
