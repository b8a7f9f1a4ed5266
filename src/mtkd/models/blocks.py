"""The built-in 1-D models as a sequence of blocks, for methods that splice one model's early
blocks onto another's later blocks (TAS's hybrid assistant).

``model_blocks(model)`` returns stages whose composition is ``model.forward`` (same output,
same parameters: the stages hold the model's own submodules, nothing is copied or added):

- ``cnn1d``: one block per (conv, ReLU) pair, output [B, C, L'] (channels); head: flatten, linear.
- ``mlp``: one block per hidden (linear, ReLU[, dropout]), output [B, F] (vector); head: last linear.
- ``gru``: one block, the recurrent layer(s), output [B, L, H] (tokens); head: last state, linear.
- ``transformer``: a patch-embedding block, then one block per encoder layer, output
  [B, T, D] (tokens); head: mean over tokens, norm, linear.

Every model's first block takes the input as [B, C, L] (a 1-D signal is [B, 1, L]).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import MtkdError
from .cnn1d import Cnn1d
from .gru import Gru
from .stages import Blocks, Stage, run_blocks  # noqa: F401 - Blocks and run_blocks are used from here too
from .transformer import Transformer


def _as_channels(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 2 else x  # [B, L] -> [B, 1, L]


def _sequential(parts, x):
    for p in parts:
        x = p(x)
    return x


def _cnn_block(parts, x):
    return _sequential(parts, _as_channels(x))


def _flatten_head(parts, x):
    return parts[0](x.flatten(1))


def _gru_block(parts, x):
    x = _as_channels(x)
    return parts[0](x.transpose(1, 2))[0]  # [B, C, L] -> [B, L, C] -> outputs [B, L, H * directions]


def _gru_head(parts, x):
    rnn, head = parts
    if rnn.bidirectional:  # forward direction's last state, backward direction's state after position 0
        h = rnn.hidden_size
        return head(torch.cat([x[:, -1, :h], x[:, 0, h:]], dim=-1))
    return head(x[:, -1])


def _embed_block(parts, x):
    (model,) = parts
    x = _as_channels(x)
    b, c, length = x.shape
    tokens = x.transpose(1, 2).reshape(b, length // model.patch, model.patch * c)
    return model.embed(tokens) + model.pos  # [B, T, dim]


def _transformer_head(parts, x):
    norm, head = parts
    return head(norm(x.mean(dim=1)))


class _EmbedOnly(nn.Module):
    """The transformer's embedding and positions, without registering the rest of it again."""

    def __init__(self, model: Transformer):
        super().__init__()
        self.embed, self.pos, self.patch = model.embed, model.pos, model.patch


def model_blocks(model: nn.Module) -> Blocks:
    """Split a built-in 1-D model into body blocks and a head (see the module doc)."""
    if isinstance(model, Cnn1d):
        convs = list(model.features)
        body = [Stage(convs[i:i + 2], _cnn_block, "channels") for i in range(0, len(convs), 2)]
        return Blocks(body, Stage([model.head], _flatten_head, "vector"))
    if isinstance(model, Gru):
        return Blocks([Stage([model.rnn], _gru_block, "tokens")], Stage([model.rnn, model.head], _gru_head, "vector"))
    if isinstance(model, Transformer):
        body = [Stage([_EmbedOnly(model)], _embed_block, "tokens")]
        body += [Stage([layer], _sequential, "tokens") for layer in model.encoder.layers]
        if model.encoder.norm is not None:
            raise MtkdError("model_blocks: a transformer with a final encoder norm is not supported")
        return Blocks(body, Stage([model.norm, model.head], _transformer_head, "vector"))
    if isinstance(model, nn.Sequential) and isinstance(model[0], nn.Flatten) and isinstance(model[-1], nn.Linear):
        parts = list(model)  # the mlp: Flatten, (Linear, ReLU[, Dropout]) per hidden layer, Linear
        starts = [i for i, p in enumerate(parts) if isinstance(p, nn.Linear)]
        body = [Stage(parts[0 if n == 0 else a:b], _sequential, "vector")
                for n, (a, b) in enumerate(zip(starts[:-1], starts[1:]))]
        body = body or [Stage([parts[0]], _sequential, "vector")]  # no hidden layer: the flatten alone
        return Blocks(body, Stage([parts[-1]], _sequential, "vector"))
    from .library_blocks import library_blocks

    blocks = library_blocks(model)  # timm / torchvision image classifiers
    if blocks is not None:
        return blocks
    raise MtkdError(f"{type(model).__name__} cannot be split into blocks; TAS needs a built-in 1-D model "
                    "(cnn1d, mlp, gru, transformer) or a timm / torchvision image classifier (ViT, ResNet, "
                    "ConvNeXt, EfficientNet, MobileNet) as student and teachers")

