"""A frozen teacher whose outputs on a fixed data set were computed once.

Teachers are frozen and (here) see no random augmentation, so their logits on the transfer
set never change: computing them once turns K teacher forward passes per step into a lookup.
Each lookup checks that the batch's inputs are exactly the stored inputs at those indices;
any other input (a validation batch, a different data set) is sent to the live teacher, so
a stale or mismatched output is never served. The on-disk, fingerprinted cache of the
performance issue builds on the same interface.
"""
from __future__ import annotations

import torch

from .frozen import FrozenTeacher


class PrecomputedTeacher(FrozenTeacher):
    def __init__(self, teacher: FrozenTeacher, x: torch.Tensor, index: torch.Tensor, batch_size: int = 2048):
        super().__init__(teacher.model, teacher.name, teacher.num_classes)
        size = int(index.max()) + 1 if len(index) else 0
        self.inputs = torch.zeros((size, *x.shape[1:]), dtype=x.dtype)
        self.logits = torch.zeros((size, teacher.num_classes or 0))
        self.known = torch.zeros(size, dtype=torch.bool)
        for i in range(0, len(x), batch_size):
            xb, ib = x[i:i + batch_size], index[i:i + batch_size]
            out = teacher(xb.to(teacher.device), ib).float().cpu()  # validated: finite, right shape
            if not self.logits.shape[1]:
                self.logits = torch.zeros((size, out.shape[1]))
            self.inputs[ib], self.logits[ib], self.known[ib] = xb, out, True

    def __call__(self, x: torch.Tensor, indices: torch.Tensor | None = None, check: bool = True) -> torch.Tensor:
        if indices is not None and len(indices):
            idx = indices.cpu()
            if int(idx.max()) < len(self.known) and bool(self.known[idx].all()) \
                    and torch.equal(self.inputs[idx], x.detach().cpu()):
                return self.logits[idx].to(x.device)
        return super().__call__(x, indices, check)
