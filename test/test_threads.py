"""Many threads converting at once, both directions, and freeing shared tensors."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
import torch
from conftest import collect

import torchbridge as tb

pytestmark = pytest.mark.slow

N_THREADS = 8
ROUNDS = 1000

DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.int16, np.complex64,
          np.bool_, np.uint32, np.float16]
SHAPES = [(0,), (), (7,), (3, 5), (2, 3, 4), (600, 600)]  # the last drops the GIL


def run_threads(worker, n=N_THREADS):
    barrier = threading.Barrier(n)
    errors = []

    def body(i):
        try:
            barrier.wait(timeout=30)
            worker(i)
        except BaseException as e:  # reported in the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    if errors:
        raise errors[0]


def make_array(rng, dtype, shape):
    a = (rng.standard_normal(shape) * 100)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * a
    return np.asarray(a).astype(dtype)


def test_threads_convert_both_ways_with_right_values():
    def worker(i):
        rng = np.random.default_rng(i)
        for r in range(ROUNDS):
            dtype = DTYPES[(i + r) % len(DTYPES)]
            shape = SHAPES[(i * 7 + r) % len(SHAPES)]
            if shape == (600, 600) and r % 10:
                shape = (4, 4)  # keep the big ones occasional
            a = make_array(rng, dtype, shape)
            view = a.T if a.ndim > 1 and r % 2 else a
            if a.ndim and r % 3 == 0:
                view = view[::-1]  # copied
            expected = view.copy()

            t = tb.to_tensor(view, float_dtype=None)
            assert tuple(t.shape) == view.shape
            assert np.array_equal(t.numpy(), expected)

            back = tb.to_numpy(t)
            assert back.dtype == view.dtype
            assert np.array_equal(back, expected)

            t2 = torch.from_numpy(expected.copy())
            out = tb.to_numpy(t2)
            assert out.ctypes.data == t2.data_ptr() or out.size == 0
            assert np.array_equal(out, expected)

            t32 = tb.to_tensor(view)  # the float policy, too
            if view.dtype == np.float64:
                assert t32.dtype == torch.float32
                assert np.array_equal(t32.numpy(), expected.astype(np.float32))
    run_threads(worker)


def test_threads_writing_through_shared_memory_see_their_own_writes():
    arrays = [np.zeros(1000, dtype=np.int64) for _ in range(N_THREADS)]

    def worker(i):
        a = arrays[i]
        for r in range(ROUNDS):
            t = tb.to_tensor(a, copy=False)
            t += 1
            back = tb.to_numpy(t)
            back[0] += 1
            assert a[0] == 2 * (r + 1) and a[1] == r + 1
    run_threads(worker)
    assert all(a[0] == 2 * ROUNDS and a[-1] == ROUNDS for a in arrays)


def test_threads_convert_the_same_array_at_once():
    shared = np.arange(100_000, dtype=np.float32)
    rev = shared[::-1]

    def worker(i):
        for _ in range(ROUNDS // 3):
            t = tb.to_tensor(shared)
            assert t.data_ptr() == shared.ctypes.data
            c = tb.to_tensor(rev)
            assert c[0].item() == 99_999.0 and c[-1].item() == 0.0
            s = tb.to_tensor([shared[:10], shared[10:20]])
            assert s[1, 0].item() == 10.0
    run_threads(worker)


def test_threads_stack_lists_and_trees():
    def worker(i):
        for r in range(ROUNDS // 3):
            parts = [np.full(50, i * 1000 + r + k, dtype=np.int32) for k in range(4)]
            t = tb.to_tensor(parts)
            assert t[:, 0].tolist() == [i * 1000 + r + k for k in range(4)]
            tree = tb.tree_to_numpy(tb.tree_to_tensor({"p": parts, "s": "x"}))
            assert tree["s"] == "x" and tree["p"][3][0] == i * 1000 + r + 3
    run_threads(worker)


def test_threads_free_tensors_that_share_arrays():
    freed = []
    lock = threading.Lock()

    def note():
        with lock:
            freed.append(1)

    per_thread = 50
    tensors = []
    for i in range(N_THREADS * per_thread):
        owner = np.arange(100, dtype=np.float32) + i
        weakref.finalize(owner, note)
        tensors.append(tb.to_tensor(owner))
    del owner
    batches = [tensors[i::N_THREADS] for i in range(N_THREADS)]
    del tensors

    def worker(i):
        mine = batches[i]
        batches[i] = None
        for k, t in enumerate(mine):
            assert t[0].item() == i + k * N_THREADS
        while mine:
            mine.pop()  # the last reference dies on this thread

    run_threads(worker)
    collect()
    assert len(freed) == N_THREADS * per_thread


def test_threads_free_arrays_exported_from_tensors():
    from torch.multiprocessing.reductions import StorageWeakRef

    tensors = [torch.full((64,), float(i)) for i in range(N_THREADS * 20)]
    refs = [StorageWeakRef(t.untyped_storage()) for t in tensors]
    arrays = [tb.to_numpy(t) for t in tensors]
    del tensors
    batches = [arrays[i::N_THREADS] for i in range(N_THREADS)]
    del arrays

    def worker(i):
        mine = batches[i]
        batches[i] = None
        for k, a in enumerate(mine):
            assert a[5] == i + k * N_THREADS
        mine.clear()

    run_threads(worker)
    collect()
    assert all(r.expired() for r in refs)


def test_native_thread_releases_while_python_threads_convert():
    owners_freed = []

    def worker(i):
        for r in range(40):
            owner = np.arange(10, dtype=np.float32)
            weakref.finalize(owner, owners_freed.append, 1)
            t = tb.to_tensor(owner)
            del owner
            tb._C._release_in_native_thread(t, r % 3)
            del t
            tb.to_numpy(tb.to_tensor(np.ones(5, np.float32)))

    run_threads(worker)
    import time
    deadline = time.monotonic() + 10
    while len(owners_freed) < N_THREADS * 40 and time.monotonic() < deadline:
        time.sleep(0.005)
    collect()
    assert len(owners_freed) == N_THREADS * 40
