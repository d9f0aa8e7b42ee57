"""Fake (meta) kernels of the torchbridge operators, for torch.compile.

Named in C++ by ``m.set_python_module("torchbridge._fake")``. They call the
compiled dtype and device rules (``_C._policy_dtype``, ``_C._host_dtype``,
``_C._resolve_device``) instead of re-typing them, so they cannot drift from
the kernels.

``register_fake`` also installs these functions as the operators' Meta
kernels, so an eager call with a genuine meta tensor lands here too (torch
refuses a C++ Meta kernel beside a fake one: see csrc/ops/meta.cpp). Such a
tensor has no data: it goes to the compiled kernels (``_C._meta_to_host``,
``_C._meta_coerce``), which raise ValueError for to_host and for moving it to
a real device, instead of returning uninitialised memory. Fake tensors
(torch.compile, opcheck, FakeTensorMode) keep the shape-only path.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _C


def _genuine_meta(t: torch.Tensor) -> bool:
    # FakeTensorMode hands its kernels FakeTensors (a FakeTensor of a CPU
    # tensor may report device meta inside the mode); only a plain meta
    # tensor reaches the Meta key in eager mode.
    if not t.is_meta:
        return False
    from torch._subclasses.fake_tensor import FakeTensor

    return not isinstance(t, FakeTensor)


@torch.library.register_fake("torchbridge::to_host")
def _to_host_fake(self: torch.Tensor, dtype: Optional[torch.dtype] = None,
                  pin_memory: bool = False) -> torch.Tensor:
    if _genuine_meta(self):
        return _C._meta_to_host(self, dtype, pin_memory)  # raises ValueError
    target = dtype if dtype is not None else _C._host_dtype(self.dtype)
    if self.layout == torch.strided:
        return torch.empty_like(self, dtype=target, device="cpu")
    return self.new_empty(self.shape, dtype=target, device="cpu")


@torch.library.register_fake("torchbridge::coerce")
def _coerce_fake(self: torch.Tensor, dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device] = None,
                 non_blocking: bool = False) -> torch.Tensor:
    if _genuine_meta(self):
        return _C._meta_coerce(self, dtype, device, non_blocking)
    target = _C._policy_dtype(self.dtype, dtype)
    where = self.device if device is None else _C._resolve_device(device)
    return torch.empty_like(self, dtype=target, device=where)
