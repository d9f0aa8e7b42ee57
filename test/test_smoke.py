"""The import works and the extension reports how it was built."""

import numpy as np
import torch

import torchbridge as tb


def test_public_names_are_the_compiled_functions():
    # No Python wrapper sits on the hot path.
    assert tb.to_tensor is tb._C.to_tensor
    assert tb.to_numpy is tb._C.to_numpy
    assert tb.to_host is tb._C.to_host


def test_build_info_matches_the_running_torch():
    info = tb._C._build_info
    assert info["version"] == tb.__version__
    assert info["torch"] == torch.__version__
    assert int(info["numpy_headers"].split(".")[0]) >= 2


def test_round_trip_shares_memory():
    a = np.arange(4, dtype=np.float32)
    t = tb.to_tensor(a)
    t[1] = 7.0
    assert a[1] == 7.0
    assert np.shares_memory(tb.to_numpy(t), a)
