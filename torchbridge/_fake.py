"""Fake (meta) kernels of the torchbridge operators, for torch.compile.

Named in C++ by ``m.set_python_module("torchbridge._fake")``. They call the
compiled dtype and device rules (``_C._policy_dtype``, ``_C._host_dtype``,
``_C._resolve_device``) instead of re-typing them, so they cannot drift from
the kernels.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _C


@torch.library.register_fake("torchbridge::to_host")
def _to_host_fake(self: torch.Tensor, dtype: Optional[torch.dtype] = None,
                  pin_memory: bool = False) -> torch.Tensor:
    target = dtype if dtype is not None else _C._host_dtype(self.dtype)
    if self.layout == torch.strided:
        return torch.empty_like(self, dtype=target, device="cpu")
    return self.new_empty(self.shape, dtype=target, device="cpu")


@torch.library.register_fake("torchbridge::coerce")
def _coerce_fake(self: torch.Tensor, dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device] = None,
                 non_blocking: bool = False) -> torch.Tensor:
    target = _C._policy_dtype(self.dtype, dtype)
    where = self.device if device is None else _C._resolve_device(device)
    return torch.empty_like(self, dtype=target, device=where)
