"""Counted lifetimes: alive while shared, released exactly once after (nanobind style)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest
import torch
from conftest import collect
from torch.multiprocessing.reductions import StorageWeakRef

import torchbridge as tb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Owner:
    """Memory exposed through __array_interface__; counts its own deletion."""

    def __init__(self, n=8, dtype=np.float32):
        self._a = np.arange(n, dtype=dtype)
        self.__array_interface__ = self._a.__array_interface__
        self.freed = Counter()
        weakref.finalize(self, self.freed.bump)


class Buf(bytearray):
    """A buffer-protocol object whose deletion can be observed."""


class Counter:
    def __init__(self):
        self.n = 0

    def bump(self):
        self.n += 1


def watched_buffer(n=16):
    b = Buf(bytes(range(n)))
    c = Counter()
    weakref.finalize(b, c.bump)
    return b, c


def wait_until(cond, timeout=10.0):
    """Let the interpreter run (pending calls fire between bytecodes) until cond()."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


# ------------------------------------------------- to_tensor: tensor keeps array alive

def test_tensor_keeps_array_alive_and_releases_it_once():
    owner = Owner()
    freed = owner.freed
    t = tb.to_tensor(owner)
    assert t.data_ptr() == owner._a.ctypes.data
    del owner
    collect()
    assert freed.n == 0
    assert t.tolist() == list(range(8))
    t[0] = 100.0  # the memory is still ours to write
    assert t[0].item() == 100.0
    del t
    collect()
    assert freed.n == 1


def test_plain_array_refcount_goes_back_after_tensor_dies():
    a = np.arange(5, dtype=np.float32)
    base = sys.getrefcount(a)
    t = tb.to_tensor(a)
    assert sys.getrefcount(a) == base + 1  # exactly one reference, held by t
    del t
    collect()
    assert sys.getrefcount(a) == base


def test_array_weakref_lives_while_tensor_lives():
    a = np.arange(5, dtype=np.int64)
    wr = weakref.ref(a)
    t = tb.to_tensor(a)
    del a
    collect()
    assert wr() is not None and t.tolist() == [0, 1, 2, 3, 4]
    del t
    collect()
    assert wr() is None


def test_buffer_object_kept_alive_and_released_once():
    b, freed = watched_buffer()
    t = tb.to_tensor(b)
    del b
    collect()
    assert freed.n == 0 and t.tolist() == list(range(16))
    del t
    collect()
    assert freed.n == 1


def test_views_of_shared_tensor_keep_the_array_alive():
    owner = Owner()
    freed = owner.freed
    t = tb.to_tensor(owner)
    view = t[2:5]
    other = t.view(2, 4)
    del owner, t
    collect()
    assert freed.n == 0 and view.tolist() == [2, 3, 4]
    del view
    collect()
    assert freed.n == 0 and other[1, 0].item() == 4
    del other
    collect()
    assert freed.n == 1


def test_copied_tensor_does_not_hold_the_array():
    a = np.arange(5, dtype=np.float32)[::-1]
    base = sys.getrefcount(a)
    t = tb.to_tensor(a)
    assert sys.getrefcount(a) == base
    assert t.tolist() == [4, 3, 2, 1, 0]


def test_read_only_array_shared_with_copy_false_is_kept_alive():
    owner = Owner()
    owner._a.flags.writeable = False
    owner.__array_interface__ = owner._a.__array_interface__
    freed = owner.freed
    t = tb.to_tensor(owner, copy=False)
    del owner
    collect()
    assert freed.n == 0 and t.sum().item() == 28
    del t
    collect()
    assert freed.n == 1


# ------------------------------------------------- to_numpy: array keeps storage alive

def test_array_keeps_storage_alive_after_tensor_dies():
    t = torch.arange(1000, dtype=torch.float64) * 3
    storage = StorageWeakRef(t.untyped_storage())
    twr = weakref.ref(t)
    a = tb.to_numpy(t)
    del t
    collect()
    assert twr() is None  # the array holds the storage, not the tensor
    assert not storage.expired()
    torch.ones(1000, dtype=torch.float64)  # give the allocator a chance to reuse
    assert a[999] == 2997 and a.sum() == 3 * 999 * 1000 / 2
    a[0] = -1.0
    assert a[0] == -1.0
    del a
    collect()
    assert storage.expired()


def test_views_of_exported_array_keep_storage_alive():
    t = torch.arange(10.0)
    storage = StorageWeakRef(t.untyped_storage())
    a = tb.to_numpy(t)
    v = a[3:6]
    del t, a
    collect()
    assert not storage.expired() and v.tolist() == [3, 4, 5]
    del v
    collect()
    assert storage.expired()


@pytest.mark.parametrize("order", ["owner-tensor-array", "tensor-owner-array",
                                   "array-tensor-owner", "owner-array-tensor",
                                   "tensor-array-owner", "array-owner-tensor"])
def test_round_trip_released_once_in_any_deletion_order(order):
    owner = Owner()
    freed = owner.freed
    objs = {"owner": owner, "tensor": tb.to_tensor(owner)}
    objs["array"] = tb.to_numpy(objs["tensor"])
    assert np.shares_memory(objs["array"], owner._a)
    del owner
    names = order.split("-")
    for i, name in enumerate(names):
        del objs[name]
        collect()
        if i < 2:
            assert freed.n == 0
            if names[-1] != "owner":
                assert np.asarray(objs[names[-1]]).tolist() == list(range(8))
    assert freed.n == 1


def test_tensor_dies_before_array_from_to_numpy_of_plain_tensor():
    t = torch.full((4,), 2.5)
    a = tb.to_numpy(t)
    del t
    collect()
    assert a.tolist() == [2.5] * 4


# ------------------------------------------------- threads

def _release_in_python_thread(daemon):
    owner = Owner()
    freed = owner.freed
    box = [tb.to_tensor(owner)]
    del owner
    done = threading.Event()

    def drop():
        box.pop()  # the last reference dies on this thread
        done.set()

    th = threading.Thread(target=drop, daemon=daemon)
    th.start()
    assert done.wait(10)
    th.join(10)
    collect()
    assert freed.n == 1


def test_release_from_a_python_thread():
    _release_in_python_thread(daemon=False)


def test_release_from_a_daemon_thread():
    _release_in_python_thread(daemon=True)


def test_array_released_from_a_python_thread_keeps_storage_until_then():
    t = torch.arange(6.0)
    storage = StorageWeakRef(t.untyped_storage())
    box = [tb.to_numpy(t)]
    del t
    th = threading.Thread(target=box.clear)
    th.start()
    th.join(10)
    collect()
    assert storage.expired()


def test_release_from_a_native_thread_without_the_gil():
    owner = Owner()
    freed = owner.freed
    t = tb.to_tensor(owner)
    del owner
    delay_ms = 500
    start = time.monotonic()
    tb._C._release_in_native_thread(t, delay_ms)
    del t  # the native thread now holds the last reference
    if time.monotonic() - start < 0.8 * delay_ms / 1000:
        assert freed.n == 0
    # The decref is queued (no GIL on that thread) and run by the interpreter.
    assert wait_until(lambda: freed.n == 1)
    collect()
    assert freed.n == 1 and tb._C._pending_releases() == 0


def test_many_native_thread_releases_all_run_once():
    owners = [Owner(4) for _ in range(50)]
    counters = [o.freed for o in owners]
    tensors = [tb.to_tensor(o) for o in owners]
    del owners
    for t in tensors:
        tb._C._release_in_native_thread(t, 20)
    del tensors, t
    assert wait_until(lambda: all(c.n == 1 for c in counters))
    collect()
    assert [c.n for c in counters] == [1] * 50


def test_drain_releases_runs_queued_decrefs():
    owner = Owner()
    freed = owner.freed
    t = tb.to_tensor(owner)
    del owner
    tb._C._release_in_native_thread(t, 0)
    del t
    # Either the interpreter's pending call or our drain releases it, once.
    assert wait_until(lambda: tb._C._pending_releases() == 0 or freed.n == 1)
    assert wait_until(lambda: (tb._C._drain_releases(), freed.n)[1] == 1)
    collect()
    assert freed.n == 1


def test_release_during_backward_without_the_gil():
    # The autograd engine frees saved tensors with the GIL released.
    owner = Owner(4)
    freed = owner.freed
    x = tb.to_tensor(owner)
    w = torch.ones(4, requires_grad=True)
    loss = (w * x).sum()
    del owner, x
    collect()
    assert freed.n == 0  # saved for backward
    loss.backward()
    assert wait_until(lambda: (tb._C._drain_releases(), freed.n)[1] == 1)
    assert w.grad.tolist() == [0, 1, 2, 3]
    del loss
    collect()
    assert freed.n == 1


# ------------------------------------------------- interpreter exit

EXIT_SCRIPT = textwrap.dedent("""
    import threading, time
    import numpy as np, torch
    import torchbridge as tb

    class Owner:
        def __init__(self, n):
            self.a = np.arange(n, dtype=np.float32)
            self.__array_interface__ = self.a.__array_interface__

    # Module globals that live until the interpreter tears down.
    ARR = np.arange(1000, dtype=np.float32)
    T_SHARED = tb.to_tensor(ARR)
    T_OWNED = tb.to_tensor(Owner(100))
    A_EXPORTED = tb.to_numpy(torch.arange(100.0))
    ROUND = tb.to_numpy(tb.to_tensor(Owner(10)))
    CYCLE = [tb.to_tensor(Owner(5))]
    CYCLE.append(CYCLE)  # only the cyclic GC can free this one
    TREE = tb.tree_to_tensor({"a": [Owner(3), np.ones(3, np.float32)]})

    # Native threads that drop the last reference before, while and after
    # the interpreter finalizes.
    for delay in (0, 1, 5, 20, 50, 200):
        tb._C._release_in_native_thread(tb.to_tensor(Owner(10)), delay)
    time.sleep(0.01)
    print("exiting", flush=True)
""")

# Daemon threads still holding shared tensors and arrays when the interpreter
# exits: one blocked, one running Python (NumPy) code. (A daemon thread that
# is inside a torch call at exit aborts with "terminate called without an
# active exception" in torch itself, pytorch/pytorch#38228, with or without
# torchbridge; that case is not torchbridge's to test.)
DAEMON_SCRIPT = textwrap.dedent("""
    import threading, numpy as np, torch, torchbridge as tb
    ready = threading.Barrier(3)

    def blocked():
        a = np.ones((64, 64), dtype=np.float32)
        t = tb.to_tensor(a)
        back = tb.to_numpy(torch.arange(10.0))
        round_trip = tb.to_numpy(tb.to_tensor(np.arange(5.0), float_dtype=None))
        ready.wait()
        threading.Event().wait()

    def busy():
        a = np.ones(1000, dtype=np.float32)
        t = tb.to_tensor(a)
        e = tb.to_numpy(torch.zeros(1000))
        ready.wait()
        while True:
            a += 1.0  # writes through to t
            e -= 1.0

    threading.Thread(target=blocked, daemon=True).start()
    threading.Thread(target=busy, daemon=True).start()
    ready.wait()
    print("exiting", flush=True)
""")


def _run(script, timeout=120, env=None):
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _assert_clean_exit(r):
    assert "Fatal Python error" not in r.stderr, r.stderr
    assert "Segmentation" not in r.stderr and "terminate called" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    assert "exiting" in r.stdout


@pytest.mark.parametrize("run", range(3))
def test_interpreter_exit_with_live_shared_objects_in_globals_is_clean(run):
    _assert_clean_exit(_run(EXIT_SCRIPT))


@pytest.mark.parametrize("run", range(3))
def test_interpreter_exit_with_daemon_threads_holding_shared_objects_is_clean(run):
    _assert_clean_exit(_run(DAEMON_SCRIPT))


# Daemon threads inside torchbridge's GIL-released code when the interpreter
# finalizes: CPython ends such threads with pthread_exit as they take the GIL
# back, which used to unwind out of a noexcept destructor (SIGABRT,
# "terminate called without an active exception"); they are parked now.
# The threads never drop a tensor themselves: torch's own tensor dealloc
# drops and re-takes the GIL and has that hazard (see DAEMON_SCRIPT).
GIL_EXIT_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile, threading, time
    import numpy as np, torch, torchbridge as tb

    path = os.path.join(tempfile.mkdtemp(), "x.npy")
    np.save(path, np.arange(64.0))
    big = np.random.rand(1 << 21)   # 16 MB: the cast runs without the GIL
    kept = []

    def convert():
        while True:
            try:  # the cast completes, then requires_grad refuses int32
                tb.to_tensor(big, dtype=torch.int32, requires_grad=True)
            except ValueError:
                pass

    def load():
        while True:
            kept.append(tb.load(path))  # reads the file without the GIL

    for f in (convert, convert, load):
        threading.Thread(target=f, daemon=True).start()
    time.sleep(0.2)
    print("exiting", flush=True)
""")


@pytest.mark.parametrize("run", range(4))
def test_interpreter_exit_with_daemon_threads_in_gil_released_calls_is_clean(run):
    _assert_clean_exit(_run(GIL_EXIT_SCRIPT))


# Another thread empties and refills the list while to_tensor stacks it with
# the GIL released. The stack reads a snapshot it owns: each row is one whole
# array (old or new), never freed memory. MALLOC_MMAP_THRESHOLD_ makes freed
# arrays unmapped at once, so reading one would crash instead of reading
# stale bytes.
STACK_RACE_SCRIPT = textwrap.dedent("""
    import threading, numpy as np, torch, torchbridge as tb
    n = 1 << 17                     # 1 MB per float64 item: copied without the GIL
    items = [np.full(n, 1.0), np.full(n, 1.0)]
    stop = threading.Event()

    def mutate():
        k = 0
        while not stop.is_set():
            k += 1
            # New arrays first: np.full drops the GIL, and the list should
            # only change (freeing the old arrays) while to_tensor copies.
            new = [np.full(n, float(k % 5 + 1)) for _ in range(2)]
            items[:] = new
            if k % 3 == 0:
                new = [np.full(n, 2.0), np.full(n, 3.0), np.full(n, 4.0)]
                items.clear()
                items.extend(new)
            del new

    th = threading.Thread(target=mutate)
    th.start()
    stacked = 0
    try:
        for _ in range(1500):
            t = tb.to_tensor(items)
            for row in t:
                v = row[0].item()
                assert v in (1.0, 2.0, 3.0, 4.0, 5.0) and bool((row == v).all()), v
            stacked += len(t)
    finally:
        stop.set()
        th.join()
    print("exiting", stacked > 0, flush=True)
""")


def test_list_emptied_by_another_thread_while_stacking_is_safe():
    env = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    r = _run(STACK_RACE_SCRIPT, env=env)
    _assert_clean_exit(r)
    assert "exiting True" in r.stdout


# Tensor.share_memory_() moves a storage into shared memory and frees the old
# memory; an array from to_numpy keeps that old memory alive (torch's own
# .numpy() would dangle). Afterwards the two no longer share: writes to the
# array stay in the array.
SHARE_MEMORY_SCRIPT = textwrap.dedent("""
    import gc, numpy as np, torch, torchbridge as tb
    n = 1 << 22
    for make in (lambda: torch.arange(n, dtype=torch.float32),
                 lambda: tb.to_tensor(np.arange(n, dtype=np.float32))):
        t = make()
        a = tb.to_numpy(t)
        ptr = a.ctypes.data
        assert ptr == t.data_ptr()
        t.share_memory_()
        assert t.is_shared() and t.data_ptr() != ptr
        junk = [torch.full((n,), 7.0) for _ in range(4)]  # reuse freed memory
        gc.collect()
        assert a[12345] == 12345.0 and a[-1] == n - 1, (a[12345], a[-1])
        a[:] = -1.0
        assert (a == -1.0).all() and a.base.data_ptr == ptr
        assert t[5].item() == 5.0 and t[-1].item() == n - 1
        t2 = t * 1                                     # the tensor still works
        del t, t2, junk
        gc.collect()
        assert a.sum() == -n                           # and so does the array
    print("exiting", flush=True)
""")


def test_share_memory_after_to_numpy_keeps_the_arrays_memory():
    _assert_clean_exit(_run(SHARE_MEMORY_SCRIPT, env={"MALLOC_MMAP_THRESHOLD_": "65536"}))


# ------------------------------------------------- refcounts after many calls

def _refcount_stable(obj, fn, n=1000):
    fn()  # warm up caches (ml_dtypes lookup, interned strings)
    collect()
    before = sys.getrefcount(obj)
    for _ in range(n):
        fn()
    collect()
    return sys.getrefcount(obj) - before


def _raises(fn, exc):
    def call():
        try:
            fn()
        except exc:
            return
        raise AssertionError("expected " + exc.__name__)
    return call


FAILING_TO_TENSOR = {
    "negative-stride-copy-false": (
        lambda: np.arange(8, dtype=np.float32)[::-1],
        lambda a: tb.to_tensor(a, copy=False), ValueError),
    "byte-swapped-copy-false": (
        lambda: np.arange(8).astype(">f4"),
        lambda a: tb.to_tensor(a, copy=False), ValueError),
    "float-policy-copy-false": (
        lambda: np.arange(8.0),
        lambda a: tb.to_tensor(a, copy=False), ValueError),
    "datetime64": (
        lambda: np.zeros(8, "M8[s]"),
        lambda a: tb.to_tensor(a), TypeError),
    "object-ragged": (
        lambda: np.array([[1], [1, 2]], dtype=object),
        lambda a: tb.to_tensor(a), TypeError),
    "longdouble": (
        lambda: np.zeros(8, np.longdouble),
        lambda a: tb.to_tensor(a), TypeError),
    "requires-grad-int": (
        lambda: np.arange(8),
        lambda a: tb.to_tensor(a, requires_grad=True), ValueError),
    "bad-dtype-name": (
        lambda: np.arange(8),
        lambda a: tb.to_tensor(a, dtype="nope"), TypeError),
    "bad-device": (
        lambda: np.arange(8),
        lambda a: tb.to_tensor(a, device="nodevice"), ValueError),
    "pin-memory": (
        lambda: np.arange(8),
        lambda a: tb.to_tensor(a, pin_memory=True),
        RuntimeError if not torch.cuda.is_available() else ()),
    "stack-copy-false": (
        lambda: np.arange(8, dtype=np.float32),
        lambda a: tb.to_tensor([a, a], copy=False), ValueError),
    "stack-ragged": (
        lambda: np.arange(8, dtype=np.float32),
        lambda a: tb.to_tensor([a, a[:3]]), TypeError),
    "numpy-copy-false-cast": (
        lambda: np.arange(8.0),
        lambda a: tb.to_numpy(a, dtype=np.float32, copy=False), ValueError),
}


@pytest.mark.parametrize("case", FAILING_TO_TENSOR, ids=list(FAILING_TO_TENSOR))
def test_refcount_unchanged_after_1000_failing_conversions(case):
    make, call, exc = FAILING_TO_TENSOR[case]
    if exc == ():
        pytest.skip("only fails without CUDA")
    a = make()
    assert _refcount_stable(a, _raises(lambda: call(a), exc)) == 0


@pytest.mark.parametrize("call", [
    lambda t: tb.to_numpy(t, copy=False),
    lambda t: tb.to_numpy(t, dtype=np.float64, copy=False),
    lambda t: tb.to_numpy(t, dtype=">f4", copy=False),
    lambda t: tb.to_host(t, copy=False),
    lambda t: tb.to_tensor(t, dtype=torch.int32, copy=False),
    lambda t: tb.to_host(t, dtype=torch.qint8),
], ids=["bf16-to-numpy", "cast", "byteswap", "to-host", "to-tensor", "bad-dtype"])
def test_tensor_refcount_unchanged_after_1000_failing_conversions(call):
    t = torch.ones(8, dtype=torch.bfloat16)  # every call below must copy
    exc = (ValueError, TypeError)
    assert _refcount_stable(t, _raises(lambda: call(t), exc)) == 0


@pytest.mark.parametrize("call", [
    lambda a: tb.to_tensor(a),
    lambda a: tb.to_tensor(a, copy=True),
    lambda a: tb.to_tensor(a, copy=False),
    lambda a: tb.to_tensor(a, dtype=torch.float64),
    lambda a: tb.to_tensor(a[::-1]),
    lambda a: tb.to_tensor([a, a]),
    lambda a: tb.to_numpy(tb.to_tensor(a)),
    lambda a: tb.to_numpy(a, dtype=np.float64),
    lambda a: tb.to_numpy(a),
    lambda a: tb.tree_to_tensor({"a": [a]}),
], ids=["share", "copy", "copy-false", "cast", "negative", "stack", "round-trip",
        "numpy-cast", "numpy-as-is", "tree"])
def test_refcount_unchanged_after_1000_successful_conversions(call):
    a = np.arange(16, dtype=np.float32)
    assert _refcount_stable(a, lambda: call(a)) == 0


@pytest.mark.parametrize("call", [
    lambda t: tb.to_numpy(t),
    lambda t: tb.to_numpy(t, copy=True),
    lambda t: tb.to_numpy(t, dtype=np.float64),
    lambda t: tb.to_numpy(t, dtype=">f4"),
    lambda t: tb.to_host(t),
    lambda t: tb.to_tensor(t),
    lambda t: tb.to_tensor(t, dtype=torch.float16),
], ids=["export", "copy", "cast", "byteswap", "to-host", "to-tensor", "to-tensor-cast"])
def test_tensor_refcount_unchanged_after_1000_successful_conversions(call):
    t = torch.arange(16.0)
    assert _refcount_stable(t, lambda: call(t)) == 0


@pytest.mark.parametrize("spec", [np.dtype(np.float64), np.dtype(np.float32),
                                  np.dtype(">f4"), np.dtype(np.int64)],
                         ids=["f8", "f4", ">f4", "i8"])
def test_dtype_object_refcount_unchanged_after_1000_conversions(spec):
    t = torch.arange(16.0)
    a = np.arange(16.0)

    def calls():
        tb.to_numpy(t, dtype=spec)
        tb.to_numpy(a, dtype=spec)
        tb.to_tensor(a, dtype=spec)
    assert _refcount_stable(spec, calls) == 0


def test_descr_refcounts_unchanged_after_1000_exports():
    d = np.dtype(np.float32)
    t = torch.arange(16.0)
    assert _refcount_stable(d, lambda: (tb.to_numpy(t), tb.to_tensor([1.5]))) == 0
