"""Random augmentation of training batches: ``data.augment``, a list of
``torchvision.transforms.v2`` transforms by their own names and arguments::

    augment: [{RandomResizedCrop: {size: [32, 32], scale: [0.6, 1.0]}}, {RandomHorizontalFlip: {}}]

Applied to training batches only (evaluation sees the images as loaded). Every sample's
randomness comes from its own seed, a hash of (seed, stream, index), where the stream is the
epoch while training (or a recorded view's number, see ``mtkd.cache.views``): the view a sample
gets does not depend on the batch it lands in or on any other random state, so a resumed run
sees the same views and ends bit-exact on the CPU. The transforms draw from torch's global
generator, which is saved before a batch and restored after it.
"""
from __future__ import annotations

import hashlib
import json

import torch

from ..errors import ConfigError

TRAIN, VIEW, CHOICE = 0, 1, 2  # seed streams: training epochs, recorded views, which view an epoch reads


def sample_seed(seed: int, kind: int, stream: int, index: int) -> int:
    """A 63-bit seed from (seed, kind, stream, index); sha256 so nearby inputs give unrelated seeds."""
    digest = hashlib.sha256(f"{seed}/{kind}/{stream}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class Augment:
    """The v2 pipeline of ``spec`` for inputs of ``input_shape`` ([C, H, W]); output shape = input shape."""

    def __init__(self, spec: list, input_shape: tuple[int, ...], where: str = "data.augment"):
        from ..models.sources import library

        v2 = library("torchvision.transforms.v2", where)
        transforms = []
        for i, item in enumerate(spec):
            if not isinstance(item, dict) or len(item) != 1:
                raise ConfigError(f"{where}[{i}]: one transform per entry, {{Name: {{arguments}}}} (got {item!r})")
            (name, kwargs), = item.items()
            cls = getattr(v2, str(name), None)
            if not isinstance(cls, type) or not issubclass(cls, v2.Transform):
                raise ConfigError(f"{where}[{i}]: torchvision.transforms.v2 has no transform {name!r} "
                                  f"(e.g. RandomResizedCrop, RandomHorizontalFlip, ColorJitter, RandAugment)")
            try:
                transforms.append(cls(**(kwargs or {})))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}[{i}].{name}: {str(exc).splitlines()[0][:200]}") from None
        self.pipeline = v2.Compose(transforms)
        self.description = json.dumps(spec, sort_keys=True)
        if len(input_shape) != 3:
            raise ConfigError(f"{where}: augmentation needs image inputs [C, H, W], the data has {list(input_shape)}")
        try:
            out = self.pipeline(torch.rand(*input_shape))
        except Exception as exc:  # noqa: BLE001 - e.g. a transform for another dtype
            raise ConfigError(f"{where}: the transforms fail on a {list(input_shape)} image "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        if tuple(out.shape) != tuple(input_shape):
            raise ConfigError(f"{where}: the transforms turn {list(input_shape)} images into {list(out.shape)}; "
                              f"training needs the data's size (e.g. RandomResizedCrop size: {list(input_shape[1:])})")

    def __call__(self, x: torch.Tensor, index: torch.Tensor, seed: int, stream, kind: int = TRAIN) -> torch.Tensor:
        """Each sample x[i] [C, H, W] transformed under its own seed; ``stream`` an int or a tensor [B]."""
        streams = stream.tolist() if isinstance(stream, torch.Tensor) else [stream] * len(x)
        out = torch.empty_like(x)
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            for i, (idx, s) in enumerate(zip(index.tolist(), streams)):
                torch.manual_seed(sample_seed(seed, kind, s, idx))
                out[i] = self.pipeline(x[i])
        return out
