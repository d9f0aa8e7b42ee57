"""python -m torchbridge: check the install, then time it against the built-ins.

Prints the versions in use, runs a handful of checks that fail with plain
torch/NumPy (requires_grad, negative strides, byte order, bfloat16, CUDA when
present) and a per-call speed table measured in this run. Exits non-zero if
a check fails.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from typing import Callable

import numpy as np
import torch

import torchbridge as tb


def _versions() -> list[tuple[str, str]]:
    info = tb._C._build_info
    rows = [
        ("torchbridge", tb.__version__),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (built against {info['torch']})"),
        ("numpy", f"{np.__version__} (built against {info['numpy_headers']} headers)"),
        ("cuda", f"{torch.version.cuda} ({torch.cuda.device_count()} device(s))"
         if torch.version.cuda else "not in this torch build"),
    ]
    try:
        import ml_dtypes

        rows.append(("ml_dtypes", ml_dtypes.__version__))
    except ImportError:
        rows.append(("ml_dtypes", "not installed (bfloat16 arrays export as float32)"))
    return rows


def _checks() -> list[tuple[str, Callable[[], None]]]:
    def round_trip_shares_memory():
        a = np.arange(8, dtype=np.float32)
        t = tb.to_tensor(a)
        t[0] = 42.0
        assert a[0] == 42.0, "to_tensor did not share memory"
        back = tb.to_numpy(t)
        assert np.shares_memory(back, a), "to_numpy did not share memory"

    def float64_becomes_float32():
        assert tb.to_tensor(np.zeros(3)).dtype == torch.float32
        assert tb.to_tensor(np.zeros(3), float_dtype=None).dtype == torch.float64

    def requires_grad_tensor_to_numpy():
        w = torch.ones(4, requires_grad=True)
        a = tb.to_numpy(w)  # w.numpy() raises here
        with torch.no_grad():
            w.add_(1)
        assert a[0] == 2.0, "to_numpy of a requires_grad tensor did not share memory"

    def awkward_arrays_convert():
        base = np.arange(6, dtype=np.float32)
        assert tb.to_tensor(base[::-1])[0] == 5  # from_numpy raises
        ro = base.copy()
        ro.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # from_numpy warns
            assert tb.to_tensor(ro)[1] == 1
        swapped = base.astype(">f4")
        assert tb.to_tensor(swapped)[2] == 2  # from_numpy raises

    def bfloat16_to_numpy():
        a = tb.to_numpy(torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
        assert a.dtype == np.float32 and a.tolist() == [1.5, -2.0]

    def cuda_round_trip():
        t = torch.arange(5.0, device="cuda", requires_grad=True)
        a = tb.to_numpy(t)  # t.numpy() raises twice over
        assert a.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        back = tb.to_tensor(np.arange(5, dtype=np.uint8), dtype=torch.float32,
                            device="cuda")
        assert back.device.type == "cuda" and back.dtype == torch.float32
        assert back.cpu().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]

    checks = [
        ("round trip shares memory", round_trip_shares_memory),
        ("float64 -> float32 policy", float64_becomes_float32),
        ("requires_grad tensor -> numpy", requires_grad_tensor_to_numpy),
        ("negative-stride, read-only, byte-swapped arrays", awkward_arrays_convert),
        ("bfloat16 tensor -> numpy", bfloat16_to_numpy),
    ]
    if torch.cuda.is_available():
        checks.append(("CUDA tensor round trip", cuda_round_trip))
    return checks


def _per_call_ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median over `repeat` runs of the mean per-call time of `number` calls."""
    for _ in range(min(number, 1000)):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter_ns() - start) / number)
    return statistics.median(samples)


def _speed_rows(number: int, repeat: int) -> list[tuple[str, str, float, float]]:
    a = np.ones(1000, dtype=np.float32)
    t = torch.ones(1000)
    g = torch.ones(1000, requires_grad=True)
    groups = [
        ("ndarray(float32) -> tensor", lambda: tb.to_tensor(a), [
            ("torch.from_numpy", lambda: torch.from_numpy(a)),
            ("torch.as_tensor", lambda: torch.as_tensor(a)),
        ]),
        ("tensor -> ndarray", lambda: tb.to_numpy(t), [
            ("Tensor.numpy()", lambda: t.numpy()),
            ("Tensor.numpy(force=True)", lambda: t.numpy(force=True)),
        ]),
        ("requires_grad tensor -> ndarray", lambda: tb.to_numpy(g), [
            ("Tensor.detach().numpy()", lambda: g.detach().numpy()),
            ("Tensor.numpy(force=True)", lambda: g.numpy(force=True)),
        ]),
    ]
    rows = []
    for what, ours, peers in groups:
        mine = _per_call_ns(ours, number, repeat)
        for name, fn in peers:
            theirs = _per_call_ns(fn, number, repeat)
            rows.append((what, name, mine, theirs))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torchbridge", description=__doc__.split("\n")[0])
    p.add_argument("--number", type=int, default=20000, help="calls per timing run")
    p.add_argument("--repeat", type=int, default=7, help="timing runs (median taken)")
    args = p.parse_args(argv)

    print("torchbridge self-check")
    for k, v in _versions():
        print(f"  {k:<12} {v}")

    print("\nchecks (each fails with plain torch / NumPy):")
    failed = 0
    for name, fn in _checks():
        try:
            fn()
            print(f"  ok    {name}")
        except Exception as e:  # report every failing check, not just the first
            failed += 1
            print(f"  FAIL  {name}: {type(e).__name__}: {e}")
    if not torch.cuda.is_available():
        print("  skip  CUDA tensor round trip (no CUDA device)")

    print(f"\nper-call time, median of {args.repeat} runs x {args.number} calls "
          "(1000-element arrays; ratio < 1 means torchbridge is faster):")
    header = f"  {'conversion':<32} {'peer':<26} {'torchbridge':>12} {'peer':>10} {'ratio':>6}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for what, name, mine, theirs in _speed_rows(args.number, args.repeat):
        print(f"  {what:<32} {name:<26} {mine:>9.0f} ns {theirs:>7.0f} ns "
              f"{mine / theirs:>6.2f}")

    if failed:
        print(f"\n{failed} check(s) FAILED")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
