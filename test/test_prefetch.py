"""tb.prefetch: order, errors in order, early close (no thread left, nothing
staged kept), the CUDA stream discipline (skipped without a GPU)."""

from __future__ import annotations

import gc
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import torchbridge as tb
from torchbridge._prefetch import Prefetcher

from conftest import needs_cuda


def batches(n, log=None):
    try:
        for i in range(n):
            if log is not None:
                log.append(i)
            yield {"x": np.full((2, 3), float(i)), "i": i, "name": f"b{i}"}
    finally:
        if log is not None:
            log.append("closed")


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "torchbridge-prefetch"]


def wait_no_thread(timeout=5.0):
    end = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < end:
        time.sleep(0.01)
    return prefetch_threads()


def threaded(iterable, depth=2, **kw):
    """The background-thread path on the CPU (what CUDA uses, minus streams)."""
    return Prefetcher(iterable, torch.device("cpu"), depth, kw, threaded=True)


def test_cpu_converts_in_order_with_nothing_ahead():
    log = []
    p = tb.prefetch(batches(3, log), "cpu")
    assert not prefetch_threads()
    first = next(p)
    assert log == [0]  # nothing converted ahead
    assert first["x"].dtype == torch.float32 and first["i"] == 0 and first["name"] == "b0"
    rest = list(p)
    assert [b["i"] for b in rest] == [1, 2]
    assert torch.equal(rest[1]["x"], torch.full((2, 3), 2.0))
    assert log[-1] == "closed"


def test_to_tensor_keywords_apply():
    out = list(tb.prefetch(batches(2), "cpu", float_dtype=None))
    assert out[0]["x"].dtype == torch.float64
    out = list(tb.prefetch(batches(1), "cpu", dtype=torch.float16))
    assert out[0]["x"].dtype == torch.float16


@pytest.mark.parametrize("make", [lambda it: tb.prefetch(it, "cpu"),
                                  lambda it: threaded(it)])
def test_source_errors_surface_in_order(make):
    def failing():
        yield {"x": np.zeros(2)}
        yield {"x": np.ones(2)}
        raise KeyError("bad sample 7")

    p = make(failing())
    assert next(p)["x"].tolist() == [0, 0]
    assert next(p)["x"].tolist() == [1, 1]
    with pytest.raises(KeyError, match="bad sample 7"):
        next(p)
    with pytest.raises(StopIteration):
        next(p)
    assert not wait_no_thread()


def test_conversion_errors_surface_in_order():
    p = threaded(iter([{"x": np.zeros(1)}, {"x": np.array(["text"])}]))
    assert next(p)["x"].tolist() == [0]
    with pytest.raises(TypeError, match="<U4"):
        next(p)
    assert not wait_no_thread()


def test_thread_runs_depth_ahead_and_in_order():
    log = []
    p = threaded(batches(10, log), depth=2)
    time.sleep(0.3)
    # depth in the queue plus the one the thread holds waiting to put.
    assert len(log) <= 3
    assert [b["i"] for b in p] == list(range(10))
    assert not wait_no_thread()
    assert log[-1] == "closed"


def test_close_stops_the_thread_and_closes_the_source():
    log = []
    p = threaded(batches(1000, log), depth=2)
    assert next(p)["i"] == 0
    assert prefetch_threads()
    p.close()
    assert not prefetch_threads()  # joined by close()
    assert log[-1] == "closed" and len(log) < 10
    assert p._state.queue.empty()  # what it staged is dropped
    with pytest.raises(StopIteration):
        next(p)
    p.close()  # twice is fine


def test_with_block_closes():
    log = []
    with threaded(batches(100, log)) as p:
        next(p)
    assert not prefetch_threads() and log[-1] == "closed"


def test_dropping_the_iterator_stops_the_thread():
    log = []
    p = threaded(batches(1000, log), depth=1)
    next(p)
    del p
    gc.collect()
    assert not wait_no_thread()
    assert log[-1] == "closed"


def test_break_out_of_a_for_loop_stops_the_thread():
    log = []

    def consume():
        for b in threaded(batches(1000, log)):
            if b["i"] == 2:
                return b

    assert consume()["i"] == 2
    gc.collect()
    assert not wait_no_thread()


def test_argument_errors():
    with pytest.raises(ValueError, match=r"depth must be an int >= 0"):
        tb.prefetch([], "cpu", depth=-1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) device_id"):
        tb.prefetch([], "cpu", device_id=1)
    with pytest.raises(ValueError, match="device is required"):
        tb.prefetch([], None)


@needs_cuda
def test_cuda_batches_arrive_in_order_and_correct():
    src = [{"x": np.random.rand(64, 3, 8, 8), "y": np.arange(64) + i} for i in range(6)]
    out = list(tb.prefetch(src, "cuda", depth=3))
    assert not wait_no_thread()
    for s, b in zip(src, out):
        assert b["x"].is_cuda and b["x"].dtype == torch.float32
        assert torch.equal(b["x"].cpu(), torch.from_numpy(s["x"]).float())
        assert torch.equal(b["y"].cpu(), torch.from_numpy(s["y"]))


@needs_cuda
def test_cuda_consumer_stream_waits_and_memory_is_recorded():
    # The consumer runs on its own stream: the batch must be complete there
    # (waited on), and must stay valid after the producer moved on.
    src = [{"x": np.full((1 << 20,), float(i))} for i in range(8)]
    s = torch.cuda.Stream()
    total = []
    with torch.cuda.stream(s):
        for b in tb.prefetch(src, "cuda", depth=2):
            total.append(b["x"].sum())  # enqueued on s, after the wait
    torch.cuda.synchronize()
    assert [t.item() for t in total] == [float(i) * (1 << 20) for i in range(8)]


@needs_cuda
def test_cuda_close_frees_what_was_staged():
    torch.cuda.synchronize()
    gc.collect()
    base = torch.cuda.memory_allocated()
    src = ({"x": np.ones((1 << 20,), np.float32)} for _ in range(100))
    p = tb.prefetch(src, "cuda", depth=3)
    b = next(p)
    time.sleep(0.2)  # let it stage ahead
    p.close()
    assert not prefetch_threads()
    del b
    gc.collect()
    torch.cuda.synchronize()
    # Blocks freed with record_stream return once their events are seen,
    # which the allocator checks on its next allocation.
    torch.empty(1, device="cuda")  # a temporary, freed at once
    assert torch.cuda.memory_allocated() == base


def test_interpreter_exits_with_a_source_that_never_delivers(tmp_path):
    # The thread waits inside the source forever; exit must still finish
    # (bounded wait at exit, daemon thread), in a subprocess.
    script = tmp_path / "blocked.py"
    script.write_text(
        "import threading, numpy as np, torch\n"
        "from torchbridge._prefetch import Prefetcher\n"
        "def src():\n"
        "    yield {'x': np.zeros(2)}\n"
        "    threading.Event().wait()\n"
        "p = Prefetcher(src(), torch.device('cpu'), 2, {}, threaded=True)\n"
        "print(next(p)['x'].tolist())\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=60, cwd=str(tmp_path),
                       env={**os.environ,
                            "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0.0, 0.0]"
