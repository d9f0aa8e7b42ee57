"""The cache of freed outputs (csrc/core/host_memory.cpp, OutputCache): a
converted tensor or a loaded array of 256 KB up to the cap (64 MB), once
freed, keeps its pages mapped for the next output of the same size (issue
11: page faults on every call were what kept 1M-element casts behind NumPy
on a busy machine, and 64 MB loads and frames behind NumPy's huge pages).

Asserted: reuse (same data pointer, fresh values), the bounds (size range,
8 blocks, the byte cap, the env switch), that the storage behaves as any
tensor's (resize_, share_memory_, pickling to a DataLoader-style child),
fork and interpreter exit (in subprocesses).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchbridge as tb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1 << 20


def run_py(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def drain():
    """Empty the cache: allocate (then drop) blocks of unused sizes."""
    held = [tb.to_tensor(np.zeros(((300 << 10) + 4096 * i) // 4, np.float32), copy=True)
            for i in range(8)]
    del held
    blocks, _ = tb._C._host_cache()
    # The 8 drained blocks now fill the cache; none of a size a test uses.
    return blocks


def test_freed_output_is_reused_with_new_values():
    drain()
    a = np.random.default_rng(0).standard_normal(1 << 20)
    t = tb.to_tensor(a)
    p = t.data_ptr()
    del t
    blocks, held = tb._C._host_cache()
    assert blocks == 8 and held >= 4 * MB
    b = a[::-1].copy()
    t2 = tb.to_tensor(b)
    assert t2.data_ptr() == p  # the same pages, not fresh ones
    assert np.array_equal(t2.numpy(), b.astype(np.float32))
    # A live output is never handed out twice.
    t3 = tb.to_tensor(a)
    assert t3.data_ptr() != t2.data_ptr()
    assert np.array_equal(t3.numpy(), a.astype(np.float32))
    assert np.array_equal(t2.numpy(), b.astype(np.float32))


@pytest.mark.parametrize("nbytes", [64 << 10, 64 * MB + 4096])
def test_outside_the_size_range_nothing_is_kept(nbytes):
    drain()
    before = tb._C._host_cache()
    t = tb.to_tensor(np.ones(nbytes // 4, np.float32), copy=True)
    del t
    assert tb._C._host_cache() == before


def test_a_block_as_large_as_the_cap_is_kept():
    t = tb.to_tensor(np.ones(16 * MB))  # float64 -> float32: 64 MB out
    p = t.data_ptr()
    del t
    assert tb._C._host_cache() == (1, 64 * MB)  # it evicted every other block
    u = tb.to_tensor(np.full(16 * MB, 2.0))
    assert u.data_ptr() == p and bool((u == 2).all())


def test_loaded_arrays_reuse_freed_blocks(tmp_path):
    drain()
    a = np.arange(MB, dtype=np.float32)  # 4 MB
    np.save(tmp_path / "a.npy", a)
    t = tb.load(tmp_path / "a.npy")
    p = t.data_ptr()
    del t
    np.save(tmp_path / "b.npy", a[::-1])
    u = tb.load(tmp_path / "b.npy")
    assert u.data_ptr() == p  # the freed load's pages
    assert np.array_equal(u.numpy(), a[::-1])


def test_at_most_eight_blocks_and_the_byte_cap():
    held = [tb.to_tensor(np.ones((MB + 4096 * i) // 4, np.float32), copy=True)
            for i in range(12)]
    del held
    blocks, nbytes = tb._C._host_cache()
    assert blocks == 8
    assert nbytes <= 64 * MB
    big = [tb.to_tensor(np.ones((30 * MB + 4096 * i) // 4, np.float32), copy=True)
           for i in range(3)]
    del big
    blocks, nbytes = tb._C._host_cache()
    assert nbytes <= 64 * MB and blocks <= 8


def test_env_switch_turns_it_off():
    r = run_py("""
        import numpy as np, torchbridge as tb
        t = tb.to_tensor(np.ones(1 << 20))
        del t
        print(tb._C._host_cache())
    """, {"TORCHBRIDGE_HOST_CACHE_MB": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(0, 0)"


def test_storage_behaves_as_any_tensor():
    a = np.arange(1 << 20, dtype=np.float64)
    t = tb.to_tensor(a)
    t.resize_(3 << 20)  # grows through the storage's allocator (ours)
    assert torch.equal(t[: 1 << 20], torch.arange(1 << 20, dtype=torch.float32))
    t.resize_(16)
    assert torch.equal(t, torch.arange(16, dtype=torch.float32))
    u = tb.to_tensor(a)
    u.share_memory_()  # moves to shared memory; our block goes back to the cache
    assert u.is_shared() and torch.equal(u, torch.arange(1 << 20, dtype=torch.float32))
    v = pickle.loads(pickle.dumps(tb.to_tensor(a)))
    assert torch.equal(v, torch.arange(1 << 20, dtype=torch.float32))


def test_fork_while_another_thread_frees():
    """A thread inside the cache's lock at fork must not leave it locked in the child."""
    r = run_py("""
        import os, threading, numpy as np, torchbridge as tb
        a = np.ones(1 << 20)
        stop = False
        def churn():
            while not stop:
                t = tb.to_tensor(a); del t
        th = threading.Thread(target=churn); th.start()
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                t = tb.to_tensor(a); del t; t = tb.to_tensor(a)
                os._exit(0 if float(t.sum()) == float(1 << 20) else 3)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        stop = True; th.join()
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_outputs_alive_at_exit():
    """Tensors freed during interpreter teardown still find the (never destroyed) cache."""
    r = run_py("""
        import numpy as np, torchbridge as tb
        keep = [tb.to_tensor(np.ones(1 << 20)) for _ in range(3)]
        del keep[0]
        import atexit
        atexit.register(lambda: keep.clear())
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_out_of_memory_gives_the_cached_blocks_back_first():
    # Address space capped just above what the process maps: a 48 MB output
    # fits only once the cache hands back the 64 MB block it holds.
    r = run_py("""
        import resource, numpy as np, torchbridge as tb
        t = tb.to_tensor(np.ones(16 << 20))  # 64 MB of float32, then cached
        del t
        assert tb._C._host_cache() == (1, 64 << 20)
        a = np.ones(12 << 20)  # the next input (96 MB), made before the cap
        vm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmSize'))
        limit = vm * 1024 + (40 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        u = tb.to_tensor(a)  # 48 MB out
        assert u.shape == (12 << 20,) and float(u[5]) == 1.0
        print(tb._C._host_cache())
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "(0, 0)"
