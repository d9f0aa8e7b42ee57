"""Shared test set-up: devices, marks, hypothesis profiles, RNG hygiene."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# CI is deterministic (scripts/test.sh sets HYPOTHESIS_PROFILE=ci when CI=true);
# local runs explore new examples each time.
settings.register_profile(
    "ci", derandomize=True, max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

HAS_CUDA = torch.cuda.is_available()
NUMPY2 = int(np.__version__.split(".")[0]) >= 2

try:
    import ml_dtypes  # noqa: F401

    HAS_ML_DTYPES = True
except ImportError:
    HAS_ML_DTYPES = False



def optional(name: str):
    """Import an optional package or skip the test. Any import failure
    skips: pandas 3 (built for NumPy 2) raises on NumPy 1.26, not only
    ImportError."""
    import importlib

    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{name} unavailable: {type(e).__name__}: {e}")


needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
needs_two_gpus = pytest.mark.skipif(
    not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
needs_ml_dtypes = pytest.mark.skipif(not HAS_ML_DTYPES, reason="needs ml_dtypes")


def cpu_and_cuda():
    """Parametrize values for `device`: the cuda case skips without a GPU."""
    return ["cpu", pytest.param("cuda", marks=needs_cuda)]


def collect():
    """Run the garbage collector and torchbridge's queued releases."""
    import torchbridge as tb

    for _ in range(3):
        gc.collect()
    tb._C._drain_releases()


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests may seed torch/NumPy; restore the global state afterwards."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    yield
    torch.random.set_rng_state(torch_state)
    np.random.set_state(np_state)


def pytest_configure(config):
    # Kept here rather than in a pytest.ini: the top-level layout is fixed.
    config.addinivalue_line("markers", "slow: long-running (leak loops, threads)")
    config.addinivalue_line(
        "filterwarnings", "error::pytest.PytestUnraisableExceptionWarning")
