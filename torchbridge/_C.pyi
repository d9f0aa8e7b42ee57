# Types of the compiled extension torchbridge._C (the public functions are
# re-exported by torchbridge/__init__.py).
import os
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

DTypeLike = Union[torch.dtype, np.dtype[Any], type, str]
DeviceLike = Union[torch.device, str, int]
PathLike = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]

def to_tensor(
    obj: Any,
    dtype: Optional[DTypeLike] = None,
    *,
    float_dtype: Optional[DTypeLike] = torch.float32,
    device: Optional[DeviceLike] = None,
    copy: Optional[bool] = None,
    pin_memory: bool = False,
    non_blocking: bool = False,
    requires_grad: bool = False,
) -> torch.Tensor: ...
def to_numpy(
    obj: Any,
    dtype: Optional[DTypeLike] = None,
    *,
    copy: Optional[bool] = None,
) -> np.ndarray: ...
def to_host(
    tensor: torch.Tensor,
    dtype: Optional[DTypeLike] = None,
    *,
    pin_memory: bool = False,
    copy: Optional[bool] = None,
) -> torch.Tensor: ...

def load(
    path: PathLike,
    mmap: bool = False,
    device: Optional[DeviceLike] = None,
) -> Union[torch.Tensor, dict[str, torch.Tensor]]: ...
def save(
    path: PathLike,
    obj: Union[torch.Tensor, Mapping[str, torch.Tensor]],
    *,
    compress: bool = False,
) -> None: ...

class StorageRef:
    @property
    def nbytes(self) -> int: ...
    @property
    def data_ptr(self) -> int: ...

_build_info: dict[str, str]

def _policy_dtype(
    dtype: torch.dtype,
    explicit: Optional[DTypeLike] = None,
    float_dtype: Optional[DTypeLike] = torch.float32,
) -> torch.dtype: ...
def _host_dtype(dtype: torch.dtype, /) -> torch.dtype: ...
def _to_tensor_batch(leaves: list[Any], dtype: Optional[DTypeLike] = None, *,
                     float_dtype: Optional[DTypeLike] = torch.float32,
                     device: Optional[DeviceLike] = None, copy: Optional[bool] = None,
                     pin_memory: bool = False, non_blocking: bool = False,
                     requires_grad: bool = False) -> list[torch.Tensor]: ...
def _to_numpy_batch(leaves: list[Any], dtype: Optional[DTypeLike] = None, *,
                    copy: Optional[bool] = None) -> list[np.ndarray]: ...
def _transfer_tuning(chunk_bytes: Optional[int] = None,
                     min_chunked_bytes: Optional[int] = None,
                     ring_slots: Optional[int] = None,
                     direct_max_bytes: Optional[int] = None) -> dict[str, int]: ...
def _resolve_device(device: DeviceLike, /) -> torch.device: ...
def _meta_to_host(
    tensor: torch.Tensor, dtype: Optional[torch.dtype] = None, pin_memory: bool = False
) -> torch.Tensor: ...
def _meta_coerce(
    tensor: torch.Tensor,
    dtype: Optional[torch.dtype] = None,
    device: Optional[DeviceLike] = None,
    non_blocking: bool = False,
) -> torch.Tensor: ...
def _drain_releases() -> None: ...
def _pending_releases() -> int: ...
def _release_in_native_thread(tensor: torch.Tensor, delay_ms: int, /) -> None: ...
def _parallel(fail_thread_creation: Optional[bool] = ..., /) -> tuple[int, int]: ...
def _host_cache() -> tuple[int, int]: ...
def _collate_stack(
    items: Union[list[Any], tuple[Any, ...]],
    where: str,
    float_dtype: Optional[DTypeLike],
    alloc: Optional[Callable[[tuple[int, ...], torch.dtype], torch.Tensor]] = None,
) -> torch.Tensor: ...
