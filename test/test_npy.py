"""torchbridge.load / torchbridge.save: .npy and .npz files.

Files we write must be the bytes numpy.save writes and load in NumPy with the
same dtype; files NumPy writes must load; mmap=True must be a zero-copy,
warning-free, writable private view (NumPy's own np.load(mmap_mode="r") +
torch.from_numpy warns about a read-only array); hostile files raise
ValueError naming the file. The full dtype x order x version matrix and the
hostile corpus are also in the C++ tests (test/cpp/test_npy.cpp,
test/cpp/format/test_format.cpp).
"""

from __future__ import annotations

import errno
import gc
import io
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import warnings
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import torchbridge as tb
from conftest import HAS_ML_DTYPES, cpu_and_cuda

DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
          np.uint32, np.uint64, np.float16, np.float32, np.float64,
          np.complex64, np.complex128]
IDS = [np.dtype(d).name for d in DTYPES]


def sample(dtype, shape=(3, 4)) -> np.ndarray:
    rng = np.random.default_rng(abs(hash((np.dtype(dtype).str, shape))) % 2**32)
    x = np.asarray(rng.standard_normal(shape) * 50)
    if np.dtype(dtype).kind == "b":
        return np.asarray(x > 0)
    if np.dtype(dtype).kind == "c":
        return np.asarray(x + 1j * rng.standard_normal(shape)).astype(dtype)
    if np.dtype(dtype).kind == "u":
        return np.abs(x).astype(dtype)
    return x.astype(dtype)


def layouts(a: np.ndarray):
    """The same values laid out as C, Fortran and strided arrays."""
    yield "C", a
    yield "F", np.asfortranarray(a)
    wide = np.repeat(a, 2, axis=-1)
    yield "strided", wide[..., ::2]
    yield "transposed", a.T


def file_bytes(path) -> bytes:
    return pathlib.Path(path).read_bytes()


def mapped(path) -> bool:
    real = os.path.realpath(path)
    return any(real in line for line in open("/proc/self/maps"))


# ---------------------------------------------------------------- .npy


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_save_writes_the_bytes_numpy_save_writes(tmp_path, dtype):
    for name, a in layouts(sample(dtype)):
        t = tb.to_tensor(a, float_dtype=None)
        assert t.dtype == tb.to_tensor(a[:0], float_dtype=None).dtype
        tb.save(tmp_path / "ours.npy", t)
        np.save(tmp_path / "numpy.npy", a)
        assert file_bytes(tmp_path / "ours.npy") == file_bytes(tmp_path / "numpy.npy"), name
        back = np.load(tmp_path / "ours.npy")
        assert back.dtype == a.dtype
        assert back.tobytes() == a.tobytes()


@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (7,), (2, 1, 3), (1,) * 20])
def test_save_matches_numpy_for_every_shape(tmp_path, shape):
    a = sample(np.float32, shape)
    tb.save(tmp_path / "ours.npy", torch.from_numpy(a.copy()))
    np.save(tmp_path / "numpy.npy", a)
    assert file_bytes(tmp_path / "ours.npy") == file_bytes(tmp_path / "numpy.npy")


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("fortran", [False, True])
def test_load_reads_what_numpy_saves(tmp_path, dtype, order, fortran):
    native = sample(dtype)
    a = native.astype(native.dtype.newbyteorder(order))
    a = np.asfortranarray(a) if fortran else a
    np.save(tmp_path / "a.npy", a)
    t = tb.load(tmp_path / "a.npy")
    assert t.dtype == tb.to_tensor(native, float_dtype=None).dtype
    assert t.shape == a.shape
    assert tb.to_numpy(t).tobytes() == native.tobytes()
    if fortran:
        assert t.stride() == (1, 3)  # Fortran order stays column-major


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_load_reads_every_format_version(tmp_path, version):
    a = sample(np.int64, (4, 5))
    with open(tmp_path / "a.npy", "wb") as f:
        np.lib.format.write_array(f, a, version=version)
    assert torch.equal(tb.load(tmp_path / "a.npy"), torch.from_numpy(a))


@given(arrays(dtype=st.sampled_from(DTYPES),
              shape=array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       st.sampled_from(["C", "F"]))
def test_round_trips_with_numpy_bit_for_bit(tmp_path_factory, a, order):
    path = tmp_path_factory.mktemp("h") / "a.npy"
    a = np.array(a, order=order)
    np.save(path, a)
    t = tb.load(path)
    assert tb.to_numpy(t).tobytes(order="A") == a.tobytes(order="A")
    ours = path.with_name("ours.npy")
    tb.save(ours, t)
    assert file_bytes(ours) == file_bytes(path)


def test_bytes_after_the_data_are_ignored_like_np_load(tmp_path):
    # Several arrays np.save'd to one handle: np.load reads the first.
    with open(tmp_path / "two.npy", "wb") as f:
        np.save(f, np.arange(3))
        np.save(f, np.arange(5))
    assert np.load(tmp_path / "two.npy").tolist() == [0, 1, 2]
    assert tb.load(tmp_path / "two.npy").tolist() == [0, 1, 2]


def test_paths_may_be_str_bytes_or_pathlike(tmp_path):
    p = tmp_path / "a.npy"
    tb.save(str(p), torch.ones(2))
    tb.save(os.fsencode(p), torch.ones(2))
    tb.save(p, torch.ones(2))
    assert tb.load(str(p)).tolist() == [1.0, 1.0]
    assert tb.load(os.fsencode(p)).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="os.PathLike"):
        tb.load(3)


@pytest.mark.parametrize("device", cpu_and_cuda())
def test_device_moves_the_result(tmp_path, device):
    tb.save(tmp_path / "a.npy", torch.arange(4.0))
    tb.save(tmp_path / "a.npz", {"x": torch.arange(4.0)})
    for mmap in (False, True):
        t = tb.load(tmp_path / "a.npy", mmap=mmap, device=device)
        assert t.device.type == device
        assert tb.load(tmp_path / "a.npz", mmap=mmap, device=device)["x"].device.type == device


def test_save_accepts_tensors_of_any_kind(tmp_path):
    z = torch.complex(torch.arange(3.0), torch.ones(3))
    cases = {
        "grad": torch.arange(3.0, requires_grad=True),
        "conj": z.conj(),
        "expanded": torch.arange(3).expand(2, 3),
        "sparse": torch.eye(3).to_sparse(),
    }
    for name, t in cases.items():
        tb.save(tmp_path / "a.npy", t)
        want = t.detach().resolve_conj()
        want = want.to_dense() if want.is_sparse else want
        assert np.array_equal(np.load(tmp_path / "a.npy"), want.numpy()), name


# ---------------------------------------------------------------- mmap


def test_mmap_is_zero_copy_writable_and_warning_free(tmp_path):
    p = tmp_path / "big.npy"
    a = np.arange(1 << 20, dtype=np.float32)
    np.save(p, a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = tb.load(p, mmap=True)
    assert mapped(p)
    assert t.data_ptr() % 64 == 0
    t[0] = 42.0  # writable: a private copy-on-write page
    assert t[0] == 42.0
    assert np.load(p)[0] == 0.0  # never written to the file
    del t
    gc.collect()
    assert not mapped(p)


def test_numpy_read_only_mmap_warns_which_ours_does_not(tmp_path):
    # The motivation: np.load(mmap_mode="r") + from_numpy is a read-only
    # array torch warns about (and may not write to).
    np.save(tmp_path / "a.npy", np.arange(10.0))
    with pytest.warns(UserWarning, match="not writable"):
        torch.from_numpy(np.load(tmp_path / "a.npy", mmap_mode="r"))


def test_mmap_refuses_byte_swapped_data_and_says_what_to_do(tmp_path):
    np.save(tmp_path / "be.npy", np.arange(4, dtype=">f4"))
    with pytest.raises(ValueError, match="pass mmap = false to load a copy"):
        tb.load(tmp_path / "be.npy", mmap=True)
    assert tb.load(tmp_path / "be.npy").tolist() == [0.0, 1.0, 2.0, 3.0]


def test_mmap_of_npz_views_our_stored_members(tmp_path):
    p = tmp_path / "a.npz"
    tb.save(p, {"a": torch.arange(1000.0), "b": torch.ones(3, dtype=torch.int16)})
    d = tb.load(p, mmap=True)
    assert mapped(p)
    assert all(t.data_ptr() % 64 == 0 for t in d.values())
    del d
    gc.collect()
    assert not mapped(p)


# ---------------------------------------------------------------- .npz


@pytest.mark.parametrize("compress", [False, True])
def test_npz_round_trips_in_order_and_numpy_reads_it(tmp_path, compress):
    d = {f"{np.dtype(dt).name}": torch.from_numpy(sample(dt)) for dt in DTYPES}
    d["fortran"] = torch.from_numpy(np.asfortranarray(sample(np.float64)))
    d["scalar"] = torch.tensor(2.5)
    d["empty"] = torch.empty(0, 4, dtype=torch.int32)
    d["sub/dir"] = torch.ones(2)
    p = tmp_path / "a.npz"
    tb.save(p, d, compress=compress)
    with np.load(p) as z:
        assert z.files == list(d)
        for k, t in d.items():
            assert z[k].dtype == tb.to_numpy(t).dtype, k
            assert np.array_equal(z[k], tb.to_numpy(t)), k
    with zipfile.ZipFile(p) as zf:
        assert zf.testzip() is None  # CRCs verified by Python's zipfile
        methods = {i.compress_type for i in zf.infolist()}
    assert methods == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
    for mmap in (False, True):
        back = tb.load(p, mmap=mmap)
        assert list(back) == list(d)
        for k in d:
            assert torch.equal(back[k], d[k]), k


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_load_reads_numpy_archives(tmp_path, save):
    arrays = {np.dtype(dt).name: sample(dt) for dt in DTYPES}
    arrays["été"] = np.arange(3)
    save(tmp_path / "a.npz", **arrays)
    d = tb.load(tmp_path / "a.npz")
    assert isinstance(d, dict)
    assert list(d) == list(arrays)
    for k, a in arrays.items():
        assert tb.to_numpy(d[k]).tobytes() == a.tobytes(), k


def test_archives_of_more_than_65535_members_use_zip64_both_ways(tmp_path):
    n = 65537
    d = {f"a{i}": torch.tensor(i, dtype=torch.int32) for i in range(n)}
    tb.save(tmp_path / "many.npz", d)
    with np.load(tmp_path / "many.npz") as z:
        assert len(z.files) == n
        assert int(z["a65536"]) == 65536
    back = tb.load(tmp_path / "many.npz")
    assert len(back) == n and int(back["a65536"]) == 65536


@pytest.mark.skipif(os.environ.get("TORCHBRIDGE_BIG_TESTS") != "1",
                    reason="writes a 4.3 GB archive; set TORCHBRIDGE_BIG_TESTS=1")
def test_archives_over_4_gib_use_zip64_sizes_and_offsets(tmp_path):
    big = torch.zeros((1 << 32) + 4096, dtype=torch.uint8)
    big[-1] = 7
    tb.save(tmp_path / "big.npz", {"small": torch.arange(3), "big": big,
                                   "after": torch.arange(5)})
    del big
    with zipfile.ZipFile(tmp_path / "big.npz") as zf:
        assert zf.getinfo("after.npy").header_offset > 2**32
    with np.load(tmp_path / "big.npz", mmap_mode=None) as z:
        assert z["after"].tolist() == [0, 1, 2, 3, 4]
        assert z["big"][-1] == 7
    d = tb.load(tmp_path / "big.npz", mmap=True)
    assert int(d["big"][-1]) == 7 and d["after"].tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- errors


def test_missing_files_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot open the file"):
        tb.load(tmp_path / "nope.npy")
    with pytest.raises(FileNotFoundError):
        tb.save(tmp_path / "no" / "dir.npy", torch.ones(1))
    with pytest.raises(IsADirectoryError):
        tb.load(tmp_path)
    with pytest.raises(IsADirectoryError):
        tb.save(tmp_path, torch.ones(1))


def test_dtypes_numpy_lacks_are_refused_on_save(tmp_path):
    with pytest.raises(TypeError, match="bfloat16, which NumPy has no dtype for"):
        tb.save(tmp_path / "a.npy", torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="the array \"w\" is float8_e4m3fn"):
        tb.save(tmp_path / "a.npz", {"w": torch.ones(2).to(torch.float8_e4m3fn)})
    assert not os.listdir(tmp_path)  # nothing written, nothing left behind
    # The fix the message gives works, exactly.
    bf = torch.tensor([1.5, -2.25, 3e38]).to(torch.bfloat16)
    tb.save(tmp_path / "a.npy", bf.float())
    assert torch.equal(tb.load(tmp_path / "a.npy").to(torch.bfloat16), bf)


def test_save_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="expects a torch.Tensor .* or a mapping"):
        tb.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(TypeError, match="names must be str"):
        tb.save(tmp_path / "a.npz", {1: torch.ones(1)})
    with pytest.raises(TypeError, match="the value for 'x' is a numpy.ndarray"):
        tb.save(tmp_path / "a.npz", {"x": np.ones(1)})
    with pytest.raises(ValueError, match="ends in .npz but obj is a single tensor"):
        tb.save(tmp_path / "a.npz", torch.ones(1))
    with pytest.raises(ValueError, match="ends in .npy but obj is a mapping"):
        tb.save(tmp_path / "a.npy", {"x": torch.ones(1)})
    with pytest.raises(ValueError, match="compress=True applies to .npz"):
        tb.save(tmp_path / "a.bin", torch.ones(1), compress=True)


def test_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([1, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object array, stored with pickle"):
        tb.load(tmp_path / "o.npy")


@pytest.mark.skipif(not HAS_ML_DTYPES, reason="needs ml_dtypes")
def test_ml_dtypes_bfloat16_files_are_refused_with_the_reason(tmp_path):
    import ml_dtypes

    np.save(tmp_path / "bf.npy", np.ones(3, dtype=ml_dtypes.bfloat16))
    with pytest.raises(ValueError, match="raw void bytes"):
        tb.load(tmp_path / "bf.npy")


HOSTILE = {
    "truncated": lambda b: b[:len(b) - 5],
    "bad magic": lambda b: b"\x93NUMPZ" + b[6:],
    "v2 header_len 0xFFFFFFF0": lambda b: b"\x93NUMPY\x02\x00\xf0\xff\xff\xff",
    "negative dim": lambda b: b.replace(b"(3,)", b"(-3,)"),
    "object": lambda b: b.replace(b"'<f8'", b"'|O' "),
    "garbage": lambda b: os.urandom(200),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_raise_value_error_naming_the_file(tmp_path, name):
    buf = io.BytesIO()
    np.save(buf, np.arange(3.0))
    p = tmp_path / "bad.npy"
    p.write_bytes(HOSTILE[name](buf.getvalue()))
    for mmap in (False, True):
        with pytest.raises(ValueError, match=f'npy::load\\("{p}"\\): '):
            tb.load(p, mmap=mmap)


def test_failing_calls_leak_no_references(tmp_path):
    p = tmp_path / "bad.npy"
    p.write_bytes(b"not a numpy file at all")
    path = str(p)
    before = sys.getrefcount(path)
    for _ in range(1000):
        with pytest.raises(ValueError):
            tb.load(path)
        with pytest.raises(TypeError):
            tb.save(path, torch.ones(1, dtype=torch.bfloat16))
    assert sys.getrefcount(path) == before


# ------------------------------------------- issue 11: hostile paths and files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh interpreter, so a crash or a hang fails the
    test instead of killing or freezing the suite."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the script hung for {timeout} s: {e.stdout!r} {e.stderr!r}")


ITEMS = {
    "lists": "[['a', torch.ones(1)]]",
    "a 3-tuple": "[('a', torch.ones(1), 0)]",
    "a 1-tuple": "[('a',)]",
    "a str": "['ab']",
    "None": "[None]",
}


@pytest.mark.parametrize("case", list(ITEMS))
def test_save_of_a_mapping_whose_items_are_not_pairs_is_a_type_error(tmp_path, case):
    # Was SIGSEGV: PyTuple_GET_ITEM on whatever items() yielded.
    p = tmp_path / "m.npz"
    r = run_script(f"""
        import collections.abc, torch, torchbridge as tb
        class M(collections.abc.Mapping):
            def __getitem__(self, k): raise KeyError(k)
            def __iter__(self): return iter(())
            def __len__(self): return 1
            def items(self): return {ITEMS[case]}
        try:
            tb.save({str(p)!r}, M())
        except TypeError as e:
            print("TypeError:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "TypeError: save(): obj.items() yielded " in r.stdout, r.stdout
    assert "not a (name, tensor) pair" in r.stdout and "dict(" in r.stdout, r.stdout
    assert not p.exists()


def test_save_of_a_mapping_with_a_non_str_key_names_it(tmp_path):
    with pytest.raises(TypeError, match=r"names must be str, got int \(1\)"):
        tb.save(tmp_path / "a.npz", {1: torch.ones(1)})
    assert not os.listdir(tmp_path)


def zip_data_range(path, name):
    """(offset, size) of member `name`'s raw data in the archive."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    nlen, xlen = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    return info.header_offset + 30 + nlen + xlen, info.compress_size


def corrupt_member(path, name, at=-1):
    off, size = zip_data_range(path, name)
    with open(path, "r+b") as f:
        f.seek(off + (at % size))
        b = f.read(1)
        f.seek(off + (at % size))
        f.write(bytes([b[0] ^ 0x55]))


def test_mmap_load_of_npz_verifies_the_crc_of_stored_members(tmp_path):
    p = tmp_path / "a.npz"
    tb.save(p, {"a": torch.arange(1000.0), "b": torch.ones(3)})
    good = tb.load(p, mmap=True)
    assert mapped(p) and torch.equal(good["a"], torch.arange(1000.0))
    del good
    gc.collect()
    corrupt_member(p, "a.npy")  # the last data byte: no parser sees it
    for mmap in (False, True):
        with pytest.raises(ValueError, match=r'npz::load\(".*"\), member "a.npy": '
                                             r"CRC-32 mismatch"):
            tb.load(p, mmap=mmap)
    gc.collect()
    assert not mapped(p)  # nothing of the refused archive stays mapped


def test_mmap_load_checks_the_crc_before_normalizing_bools(tmp_path):
    # Bool bytes other than 0/1 are set to 1 in the private mapping: the CRC
    # is of the file's bytes, so it must be computed before that.
    p = tmp_path / "b.npz"
    raw = torch.tensor([0, 2, 1, 255], dtype=torch.uint8)
    tb.save(p, {"b": raw.view(torch.bool)})
    with zipfile.ZipFile(p) as zf:
        assert zf.testzip() is None
    t = tb.load(p, mmap=True)["b"]
    assert t.view(torch.uint8).tolist() == [0, 1, 1, 1]
    assert t.tolist() == [False, True, True, True]
    assert tb.load(p)["b"].view(torch.uint8).tolist() == [0, 1, 1, 1]


def rename_member(path, old: bytes, new: bytes):
    data = pathlib.Path(path).read_bytes()
    assert len(old) == len(new) and data.count(old) == 2  # local + central
    pathlib.Path(path).write_bytes(data.replace(old, new))


def test_npz_names_that_collide_after_decoding_are_refused(tmp_path):
    # b"\x82.npy" without the UTF-8 flag is code page 437 for "é.npy", the
    # name of the UTF-8-flagged second member: one would be dropped silently.
    p = tmp_path / "c.npz"
    with zipfile.ZipFile(p, "w") as zf:
        for name, a in (("X.npy", np.arange(3)), ("é.npy", np.arange(5))):
            buf = io.BytesIO()
            np.save(buf, a)
            zf.writestr(name, buf.getvalue())
    rename_member(p, b"X.npy", b"\x82.npy")
    with zipfile.ZipFile(p) as zf:
        assert zf.namelist() == ["é.npy", "é.npy"]
    for mmap in (False, True):
        with pytest.raises(ValueError, match="two members named \"é.npy\""):
            tb.load(p, mmap=mmap)


def test_npz_exact_duplicate_names_are_refused(tmp_path):
    p = tmp_path / "d.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile: "Duplicate name"
        with zipfile.ZipFile(p, "w") as zf:
            for a in (np.arange(3), np.arange(5)):
                buf = io.BytesIO()
                np.save(buf, a)
                zf.writestr("x.npy", buf.getvalue())
    with pytest.raises(ValueError, match="two members named \"x.npy\""):
        tb.load(p)


SPECIAL_LOAD = """
    import errno, os, socket, sys, threading, time, torchbridge as tb
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX); s.bind(path)
    ticks = [0]
    def tick():
        while True:
            ticks[0] += 1
            time.sleep(0.001)
    threading.Thread(target=tick, daemon=True).start()
    for mmap in (False, True):
        try:
            tb.load(path, mmap=mmap)
            print("loaded")
        except OSError as e:
            print(type(e).__name__, errno.errorcode.get(e.errno), e)
    print("ticks", ticks[0] > 0)
"""


@pytest.mark.parametrize("kind,what", [("fifo", "a FIFO (named pipe)"),
                                       ("socket", "a socket"),
                                       ("chardev", "a character device")])
def test_load_refuses_what_is_not_a_regular_file_without_blocking(tmp_path, kind, what):
    # A FIFO without a writer blocked open() with the GIL held: every thread
    # froze, and the subprocess hangs (run_script fails it after 60 s).
    path = "/dev/null" if kind == "chardev" else str(tmp_path / kind)
    env_script = SPECIAL_LOAD.replace("sys.argv[1], sys.argv[2]", f"{kind!r}, {path!r}")
    r = run_script(env_script, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    for line in lines[:2]:
        assert line.startswith(f'OSError EINVAL [Errno 22] load("{path}"): is {what}, '
                               "not a regular file"), line
        assert "copy it to a regular file" in line, line
    assert lines[2] == "ticks True"


def inotify_opens(path, action) -> int:
    """How many times `action()` opens `path` (inotify IN_OPEN events; the
    watch takes closes too, or consecutive opens would merge into one)."""
    import ctypes
    import ctypes.util
    import struct

    in_open, in_close = 0x20, 0x08 | 0x10
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    if fd < 0:
        pytest.skip("inotify is not available")
    try:
        if libc.inotify_add_watch(fd, os.fsencode(path), in_open | in_close) < 0:
            pytest.skip("inotify_add_watch failed")
        action()
        try:
            events = os.read(fd, 1 << 16)
        except BlockingIOError:
            return 0
        opens, at = 0, 0
        while at < len(events):
            _, mask, _, name_len = struct.unpack_from("iIII", events, at)
            opens += bool(mask & in_open)
            at += 16 + name_len
        return opens
    finally:
        os.close(fd)


def test_load_opens_the_file_once(tmp_path):
    tb.save(tmp_path / "a.npy", torch.arange(10))
    tb.save(tmp_path / "a.npz", {"x": torch.arange(10)})
    for name in ("a.npy", "a.npz"):
        for mmap in (False, True):
            assert inotify_opens(tmp_path / name, lambda: tb.load(tmp_path / name, mmap=mmap)) == 1


def test_other_threads_run_while_a_big_file_loads(tmp_path):
    # The whole load (open, sniff, parse, read) runs without the GIL. With
    # a long switch interval the only way the counter thread can run during
    # tb.load is the load releasing the GIL.
    p = tmp_path / "big.npy"
    np.save(p, np.ones(16 << 20, dtype=np.float32))  # 64 MB
    r = run_script(f"""
        import sys, threading, time, torchbridge as tb
        sys.setswitchinterval(1000.0)
        count, stop, started = [0], [False], threading.Event()
        def counter():
            started.set()
            while not stop[0]:
                count[0] += 1
                time.sleep(0)  # gives the GIL back (and nothing else does)
        th = threading.Thread(target=counter)
        th.start()
        started.wait()
        progressed = 0
        for _ in range(10):
            before = count[0]
            t = tb.load({str(p)!r})
            progressed += count[0] > before
            del t
        stop[0] = True
        th.join()
        print("progressed", progressed)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("progressed "), r.stdout
    assert int(r.stdout.split()[1]) > 0, r.stdout


def leftovers(*dirs) -> list:
    """Temporary files a save left behind."""
    return [n for d in dirs for n in os.listdir(d) if ".tmp" in n or n.startswith(".tb")]


def test_save_through_symlinks_replaces_the_final_target_and_keeps_the_links(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    tb.save(real / "a.npy", torch.zeros(2))
    os.symlink("real/a.npy", tmp_path / "link1.npy")  # relative, as ln -s makes
    os.symlink(tmp_path / "link1.npy", tmp_path / "link2.npy")  # a chain
    os.symlink("real/new.npy", tmp_path / "dangling.npy")
    tb.save(tmp_path / "link2.npy", torch.arange(3.0))
    assert os.readlink(tmp_path / "link2.npy") == str(tmp_path / "link1.npy")
    assert os.readlink(tmp_path / "link1.npy") == "real/a.npy"
    assert np.load(real / "a.npy").tolist() == [0.0, 1.0, 2.0]
    # A dangling link is written through too (its target is created), as
    # open(O_CREAT) and np.save do; the link stays a link.
    tb.save(tmp_path / "dangling.npy", torch.ones(2))
    assert os.readlink(tmp_path / "dangling.npy") == "real/new.npy"
    assert np.load(real / "new.npy").tolist() == [1.0, 1.0]
    assert not leftovers(tmp_path, real)


@pytest.mark.parametrize("kind,what", [("fifo", "a FIFO (named pipe)"),
                                       ("socket", "a socket"),
                                       ("chardev", "a character device"),
                                       ("link to fifo", "a FIFO (named pipe)")])
def test_save_refuses_targets_that_are_not_regular_files(tmp_path, kind, what):
    import socket
    import stat

    sockets = []

    def make(node):
        if kind in ("fifo", "link to fifo"):
            os.mkfifo(node)
        elif kind == "socket":
            sockets.append(socket.socket(socket.AF_UNIX))
            sockets[-1].bind(str(node))
        else:
            try:
                os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # as /dev/null
            except PermissionError:
                pytest.skip("mknod needs root")

    try:
        for obj, suffix in ((torch.ones(2), ".npy"), ({"x": torch.ones(2)}, ".npz")):
            p = tmp_path / ("target" + suffix)
            node = tmp_path / ("node" + suffix) if kind == "link to fifo" else p
            make(node)
            if node != p:
                os.symlink(node, p)
            before = {n: os.lstat(tmp_path / n) for n in os.listdir(tmp_path)}
            with pytest.raises(OSError, match=re.escape(f"is {what}, not a regular file")) as e:
                tb.save(p, obj)
            assert e.value.errno == errno.EINVAL
            assert str(e.value).startswith(f'[Errno 22] {suffix[1:]}::save("{p}"): ')
            assert "save to a regular file" in str(e.value)
            after = {n: os.lstat(tmp_path / n) for n in os.listdir(tmp_path)}
            assert {n: (s.st_ino, s.st_mode) for n, s in after.items()} == \
                {n: (s.st_ino, s.st_mode) for n, s in before.items()}  # untouched
    finally:
        for s in sockets:
            s.close()


def test_save_into_a_hard_linked_file_updates_every_link(tmp_path):
    # Written in place like np.save, so every name sees the new array.
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    tb.save(a, torch.zeros(1000))
    os.link(a, b)
    ino = os.stat(a).st_ino
    for t in (torch.arange(5.0), torch.arange(3000.0)):  # shrinks, then grows
        tb.save(a, t)
        assert os.stat(a).st_ino == os.stat(b).st_ino == ino
        assert os.stat(b).st_nlink == 2
        assert np.array_equal(np.load(b), t.numpy())
        assert file_bytes(a) == file_bytes(b)
    tb.save(b.with_suffix(".npz"), {"x": torch.ones(2)})
    assert not leftovers(tmp_path)


def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    p = tmp_path / "a.npy"
    tb.save(p, torch.zeros(2))
    os.chmod(p, 0o640)
    tb.save(p, torch.ones(2))
    assert os.stat(p).st_mode & 0o7777 == 0o640
    # A new file gets 0o666 less the umask, as np.save's open() gives it.
    umask = os.umask(0o022)
    os.umask(umask)
    tb.save(tmp_path / "new.npy", torch.ones(2))
    assert os.stat(tmp_path / "new.npy").st_mode & 0o7777 == 0o666 & ~umask


def test_save_takes_names_up_to_the_file_system_limit(tmp_path):
    name = "x" * 246 + ".npy"  # 250 bytes; NAME_MAX is 255
    tb.save(tmp_path / name, torch.arange(3))
    assert np.load(tmp_path / name).tolist() == [0, 1, 2]
    tb.save(tmp_path / name, torch.arange(4))  # replacing it too
    assert np.load(tmp_path / name).tolist() == [0, 1, 2, 3]
    assert os.listdir(tmp_path) == [name]


READ_ONLY = """
    import os, sys, numpy as np, torch, torchbridge as tb
    d = sys.argv[1]
    if os.getuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # root may write anything: drop to nobody
    p = os.path.join(d, "ro.npy")
    before = open(p, "rb").read()
    for name, save in (("np", lambda: np.save(p, np.ones(2))),
                       ("tb", lambda: tb.save(p, torch.ones(2)))):
        try:
            save()
            print(name, "wrote")
        except PermissionError as e:
            print(name, "PermissionError", e)
    assert open(p, "rb").read() == before
    print("left", sorted(os.listdir(d)))
"""


def test_save_refuses_a_read_only_file_like_np_save():
    import shutil
    import tempfile

    # tmp_path's parents are 0700: nobody could not reach it.
    d = tempfile.mkdtemp(prefix="tb-ro-")
    try:
        os.chmod(d, 0o777)  # the directory is writable: only the file says no
        p = os.path.join(d, "ro.npy")
        np.save(p, np.zeros(3))
        os.chmod(p, 0o444)
        if os.getuid() == 0:
            r = run_script(READ_ONLY.replace("sys.argv[1]", repr(d)))
            if "Operation not permitted" in r.stderr:
                pytest.skip("cannot drop root privileges here")
        elif os.access(p, os.W_OK):
            pytest.skip("this user may write a 0444 file")
        else:
            r = run_script(READ_ONLY.replace("sys.argv[1]", repr(d)))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("np PermissionError"), r.stdout
        assert lines[1].startswith(f'tb PermissionError [Errno 13] npy::save("{p}"): '), r.stdout
        assert "is not writable" in lines[1], r.stdout
        assert lines[2] == "left ['ro.npy']", r.stdout
    finally:
        shutil.rmtree(d)


WRITE_FAILS = """
    import os, resource, signal, sys, numpy as np, torch, torchbridge as tb
    d = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
    for name in ("single.npy", "linked.npy", "a.npz"):
        p = os.path.join(d, name)
        before = open(p, "rb").read()
        big = torch.ones(1 << 16)
        try:
            tb.save(p, big if name.endswith(".npy") else {"x": big})
            print(name, "wrote")
        except OSError as e:
            print(name, type(e).__name__, e.errno)
        assert open(p, "rb").read() == before, name
    print("left", sorted(os.listdir(d)))
"""


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    tb.save(tmp_path / "single.npy", torch.zeros(3))
    tb.save(tmp_path / "linked.npy", torch.zeros(3))
    os.link(tmp_path / "linked.npy", tmp_path / "other.npy")
    tb.save(tmp_path / "a.npz", {"x": torch.zeros(3)})
    r = run_script(WRITE_FAILS.replace("sys.argv[1]", repr(str(tmp_path))))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"single.npy OSError {errno.EFBIG}", f"linked.npy OSError {errno.EFBIG}",
        f"a.npz OSError {errno.EFBIG}",
        "left ['a.npz', 'linked.npy', 'other.npy', 'single.npy']"], r.stdout


def test_errors_for_paths_that_are_not_utf8_keep_their_type(tmp_path):
    # The message holds the path; a strict UTF-8 decode of it turned
    # FileNotFoundError into UnicodeDecodeError.
    bad = os.fsencode(tmp_path) + b"/\xff.npy"
    with pytest.raises(FileNotFoundError, match=r"\\xff\.npy"):
        tb.load(bad)
    os.mkdir(bad[:-4])
    with pytest.raises(IsADirectoryError, match=r"\\xff"):
        tb.save(bad[:-4], torch.ones(1))
