"""Images kept encoded and decoded when a batch is read (``data.workers`` of the image data sets).

:class:`LazyImages` stands where a data set's input tensor would: ``x[rows]`` decodes those
images (Pillow, the same :func:`mtkd.data.image_folder.decode` an eager load uses, so the values
are identical) into [B, C, H, W] float32 in [0, 1]. Memory holds the file paths (image folders)
or the encoded bytes (an image column of a Hugging Face data set), never the decoded pixels.
The training loader (:class:`mtkd.data.base.BatchLoader`) reads its batches in ``workers``
DataLoader processes, so decoding and augmentation run beside the training step.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import MtkdError


def decode(image, source, mode: str, size) -> np.ndarray:
    """One image (a path or a file object; ``image`` is PIL.Image) -> [channels, H, W] float32 in [0, 1],
    resized to ``size`` (default: its own)."""
    try:
        with image.open(source) as img:
            img = img.convert(mode)
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except OSError as exc:
        raise MtkdError(f"data: cannot read image {getattr(source, 'name', source)} ({exc})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _pil():
    from ..optional import require

    return require("PIL.Image", "images", "lazily decoded images (data.workers)")


class LazyImages:
    """N encoded images ``sources`` (paths, or bytes of an encoded file), read as [C, H, W] float32.

    ``shape`` is [N, C, H, W] (C = 1 for mode L, 3 for RGB); indexing with an int gives one image
    [C, H, W], with a slice, a list or an index tensor a batch [B, C, H, W]."""

    decoded_on_read = True  # checked by the data checks and fingerprints instead of an isinstance
    dtype = torch.float32

    def __init__(self, sources: Sequence[str | bytes], mode: str, size: tuple[int, int]):
        self.sources = list(sources)
        self.mode, self.size = mode, (int(size[0]), int(size[1]))
        self.shape = torch.Size((len(self.sources), 1 if mode == "L" else 3, *self.size))

    def __len__(self) -> int:
        return len(self.sources)

    def _decode(self, i: int) -> np.ndarray:
        src = self.sources[i]
        return decode(_pil(), io.BytesIO(src) if isinstance(src, bytes) else src, self.mode, self.size)

    def _rows(self, key) -> list[int]:
        if isinstance(key, slice):
            return list(range(len(self)))[key]
        return torch.as_tensor(key, dtype=torch.long).reshape(-1).tolist()

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.dim() == 0):
            return torch.from_numpy(self._decode(int(key)))
        rows = self._rows(key)
        if not rows:
            return torch.empty(0, *self.shape[1:])
        return torch.from_numpy(np.stack([self._decode(i) for i in rows]))  # [B, C, H, W]

    def take(self, rows) -> "LazyImages":
        """The images at ``rows``, still encoded."""
        return LazyImages([self.sources[i] for i in self._rows(rows)], self.mode, self.size)

    @staticmethod
    def cat(parts: Sequence["LazyImages"]) -> "LazyImages":
        if len({(p.mode, p.size) for p in parts}) != 1:
            raise MtkdError("data: lazily decoded splits differ in mode or size; set data.size")
        return LazyImages([s for p in parts for s in p.sources], parts[0].mode, parts[0].size)

    def digest_into(self, h: "hashlib._Hash") -> None:
        """Feed the decoded shape and every encoded file's bytes, in order, to ``h`` (a cache key:
        the bytes determine the decoded pixels, so nothing is decoded to fingerprint the data)."""
        h.update(f"lazy-images{tuple(self.shape)}{self.mode}".encode())
        for src in self.sources:
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            h.update(hashlib.sha256(data).digest())


def check_readable(sources: Sequence[str | bytes], where: str) -> None:
    """Open every image's header (no decoding), so a file Pillow cannot read is one line at load
    rather than an error in a loader process halfway through training."""
    image = _pil()
    for src in sources:
        name = "an image cell" if isinstance(src, bytes) else src
        try:
            with image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as img:
                img.size  # noqa: B018 - the header is parsed on open
        except (OSError, ValueError) as exc:
            raise MtkdError(f"{where}: cannot read image {name} ({exc})") from None


def first_size(sources: Sequence[str | bytes], size) -> tuple[int, int]:
    """``size`` or, when unset, the first image's [height, width]."""
    if size is not None:
        return tuple(size)
    with _pil().open(io.BytesIO(sources[0]) if isinstance(sources[0], bytes) else sources[0]) as img:
        return img.height, img.width
