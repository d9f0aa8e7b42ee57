"""tb.collate: default_collate's structure, one copy, the float policy,
shared memory in workers, pinned memory on request, clear errors."""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

import torchbridge as tb
from torchbridge import _collate

from conftest import HAS_CUDA, needs_cuda, optional

Point = collections.namedtuple("Point", ["xy", "label"])


@dataclasses.dataclass
class Sample:
    image: np.ndarray
    label: int
    name: str = "x"


def with_policy(batch):
    """default_collate's batch with float64 tensors as float32."""
    if isinstance(batch, torch.Tensor):
        return batch.float() if batch.dtype == torch.float64 else batch
    if isinstance(batch, dict):
        return {k: with_policy(v) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*[with_policy(v) for v in batch])
    if isinstance(batch, list):
        return [with_policy(v) for v in batch]
    return batch


def assert_same(a, b):
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def samples_nested(n=5):
    rng = np.random.default_rng(0)
    return [{
        "image": rng.random((3, 4, 4)),
        "mask": rng.integers(0, 2, (4, 4)).astype(np.uint8),
        "meta": {"id": i, "score": float(i) / 2, "ok": bool(i % 2), "name": f"s{i}"},
        "pair": (rng.random(2), i),
        "point": Point(rng.random(2).astype(np.float32), i),
        "t": torch.arange(3, dtype=torch.float64) + i,
    } for i in range(n)]


def test_matches_default_collate_with_the_float_policy():
    s = samples_nested()
    ours = tb.collate(s)
    ref = with_policy(default_collate(s))
    # Python floats: default_collate gives float64, ours float_dtype.
    ref["meta"]["score"] = ref["meta"]["score"].float()
    assert_same(ours, ref)
    assert ours["image"].dtype == torch.float32
    assert ours["t"].dtype == torch.float32
    assert ours["mask"].dtype == torch.uint8
    assert ours["meta"]["id"].dtype == torch.int64
    assert ours["meta"]["ok"].dtype == torch.bool
    assert ours["meta"]["name"] == ["s0", "s1", "s2", "s3", "s4"]
    assert isinstance(ours["pair"], list)  # default_collate's rule for tuples
    assert isinstance(ours["point"], Point)


def test_float_dtype_none_keeps_float64_and_float16_narrows():
    s = samples_nested(3)
    kept = tb.collate(s, float_dtype=None)
    assert kept["image"].dtype == torch.float64
    assert kept["meta"]["score"].dtype == torch.float64
    assert torch.equal(kept["image"], torch.from_numpy(np.stack([x["image"] for x in s])))
    half = tb.collate(s, float_dtype=torch.float16)
    assert half["image"].dtype == torch.float16
    assert torch.equal(half["image"],
                       torch.from_numpy(np.stack([x["image"] for x in s]).astype(np.float16)))


def test_complex128_follows_the_policy():
    s = [np.full((2,), 1 + 2j * i) for i in range(3)]
    out = tb.collate(s)
    assert out.dtype == torch.complex64
    assert torch.equal(out, torch.from_numpy(np.stack(s).astype(np.complex64)))


def test_leaves_at_the_root_and_numbers():
    assert torch.equal(tb.collate([1, 2, 3]), torch.tensor([1, 2, 3]))
    f = tb.collate([0.5, 1.5])
    assert f.dtype == torch.float32 and f.tolist() == [0.5, 1.5]
    b = tb.collate([True, False])
    assert b.dtype == torch.bool and b.tolist() == [True, False]
    assert tb.collate(["a", "b"]) == ["a", "b"]
    assert tb.collate([b"a", b"b"]) == [b"a", b"b"]
    assert tb.collate([None, None]) == [None, None]
    # NumPy's str and bytes scalars (HF datasets' numpy format) are text too.
    assert tb.collate([np.str_("a"), np.str_("b")]) == ["a", "b"]
    assert tb.collate([np.bytes_(b"a")]) == [b"a"]
    # NumPy scalars are 0-d arrays (np.float64 is a float subclass: policy).
    x = tb.collate([np.float64(1.5), np.float64(2.5)])
    assert x.dtype == torch.float32 and x.tolist() == [1.5, 2.5]
    i = tb.collate([np.int16(1), np.int16(2)])
    assert i.dtype == torch.int16


def test_mixed_numbers_are_never_truncated():
    # The first sample's kind leads (as in default_collate), but a float in
    # an int column makes it floating instead of truncating it.
    out = tb.collate([1, 2.5])
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 2.5]
    assert tb.collate([1.0, 2]).tolist() == [1.0, 2.0]
    assert tb.collate([1, 2.5], float_dtype=None).dtype == torch.float64
    with pytest.raises(ValueError, match=r"collate: cannot stack sample\['n'\]: .*"):
        tb.collate([{"n": 2 ** 70}, {"n": 1}])  # too big for int64
    mixed = tb.collate([True, 2])
    assert mixed.dtype == torch.int64 and mixed.tolist() == [1, 2]


def test_dataclass_samples_are_rebuilt():
    s = [Sample(np.ones((2, 2)) * i, i, f"n{i}") for i in range(3)]
    out = tb.collate(s)
    assert isinstance(out, Sample)
    assert out.image.dtype == torch.float32 and out.image.shape == (3, 2, 2)
    assert torch.equal(out.image[2], torch.full((2, 2), 2.0))
    assert torch.equal(out.label, torch.tensor([0, 1, 2]))
    assert out.name == ["n0", "n1", "n2"]


def test_dict_subclasses_keep_their_type():
    s = [collections.OrderedDict(a=np.zeros(2), b=1) for _ in range(2)]
    out = tb.collate(s)
    assert type(out) is collections.OrderedDict and list(out) == ["a", "b"]
    d = collections.defaultdict(list, a=np.zeros(2))
    out = tb.collate([d, d])
    assert type(out) is collections.defaultdict and out.default_factory is list


def test_tensor_samples_one_pass_with_policy():
    s = [torch.randn(4, 5, dtype=torch.float64) for _ in range(6)]
    out = tb.collate(s)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.stack(s).float())
    # Non-contiguous and expanded tensor samples.
    t = [torch.arange(12.0).reshape(3, 4).t(), torch.ones(1, 3).expand(4, 3)]
    out = tb.collate(t)
    assert torch.equal(out, torch.stack([x.contiguous() for x in t]))
    # Mixed dtypes promote, as torch.stack does in default_collate.
    out = tb.collate([torch.ones(2, dtype=torch.int32), torch.ones(2, dtype=torch.float32)])
    assert out.dtype == torch.float32


def test_tensor_samples_that_torch_stacks():
    # A graph to keep: torch's stack (the graph survives), policy applied.
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    out = tb.collate([w * 2, w * 3])
    assert out.requires_grad and out.dtype == torch.float32
    out.sum().backward()
    assert torch.equal(w.grad, torch.full((3,), 5.0, dtype=torch.float64))
    # bfloat16 is kept (no policy change), conj is resolved.
    bf = tb.collate([torch.ones(2, dtype=torch.bfloat16)] * 3)
    assert bf.dtype == torch.bfloat16 and bf.shape == (3, 2)
    c = torch.tensor([1 + 1j], dtype=torch.complex64)
    assert torch.equal(tb.collate([c.conj(), c]), torch.stack([c.conj().resolve_conj(), c]))


def test_array_layouts_values():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    s = [base[:, ::2], base[::-1, 1::2], base.astype(">f8")[:, :3],
         np.asfortranarray(base)[:, 3:]]
    out = tb.collate(s)
    assert torch.equal(out, torch.from_numpy(np.stack(s).astype(np.float32)))
    ro = base.copy()
    ro.flags.writeable = False
    out = tb.collate([ro, ro])
    out[0, 0, 0] = -1  # the batch is its own memory
    assert ro[0, 0] == 0


def test_output_is_fresh_memory():
    a = np.zeros((2, 2), np.float32)
    out = tb.collate([a, a])
    out += 1
    assert a.sum() == 0


def test_zero_size_leaves():
    out = tb.collate([np.zeros((0, 3)), np.zeros((0, 3))])
    assert out.shape == (2, 0, 3) and out.dtype == torch.float32


def test_ragged_arrays_name_the_key_path_and_shapes():
    s = [{"x": {"img": np.zeros((3, 4))}}, {"x": {"img": np.zeros((3, 5))}}]
    with pytest.raises(ValueError, match=r"collate: cannot stack sample\['x'\]\['img'\]: "
                       r"sample \[1\] has shape \(3, 5\), but sample \[0\] has shape "
                       r"\(3, 4\); samples stack only when their shapes are equal"):
        tb.collate(s)
    with pytest.raises(ValueError, match=r"sample\[0\]: sample \[1\] has shape \(2,\)"):
        tb.collate([(torch.zeros(3), 1), (torch.zeros(2), 1)])
    with pytest.raises(ValueError, match=r"sample\.xy: sample \[1\] has shape"):
        tb.collate([Point(np.zeros(2), 1), Point(np.zeros(3), 1)])


def test_structure_errors():
    with pytest.raises(ValueError, match=r"sample \[1\] has no key 'b', which sample "
                       r"\[0\] has"):
        tb.collate([{"a": 1, "b": 2}, {"a": 1}])
    with pytest.raises(ValueError, match=r"sample \[1\] has 1 items, but sample \[0\] "
                       r"has 2"):
        tb.collate([[1, 2], [1]])
    with pytest.raises(TypeError, match=r"cannot stack sample\['x'\]: sample \[1\] is a "
                       r"str, but sample \[0\] is an array"):
        tb.collate([{"x": np.zeros(2)}, {"x": "oops"}])
    with pytest.raises(TypeError, match=r"sample \[1\] is a str, but sample \[0\] is an int"):
        tb.collate([1, "2"])
    with pytest.raises(TypeError, match=r"collate: sample\['o'\] is a builtins.object, "
                       r"which collate cannot batch"):
        tb.collate([{"o": object()}, {"o": object()}])
    with pytest.raises(ValueError, match="no samples"):
        tb.collate([])


def test_dtypes_torch_cannot_promote_name_the_key():
    with pytest.raises(TypeError, match=r"cannot stack sample\['a'\]: sample \[1\] is int64 "
                       r"and the samples before it are uint64, which torch does not promote"):
        tb.collate([{"a": np.zeros(2, np.uint64)}, {"a": np.zeros(2, np.int64)}])


def test_text_arrays_name_the_key():
    with pytest.raises(TypeError, match=r"cannot stack sample\['text'\]: sample \[0\] is "
                       r"an array of dtype <U2, which has no tensor form"):
        tb.collate([{"text": np.array(["ab"])}, {"text": np.array(["cd"])}])
    with pytest.raises(TypeError, match=r"dtype object"):
        tb.collate([np.array([None]), np.array([None])])


def test_sparse_torch_samples_stack_into_a_sparse_batch():
    dense = [torch.tensor([[0.0, 1.5], [2.0, 0.0]], dtype=torch.float64) * (i + 1)
             for i in range(3)]
    out = tb.collate([d.to_sparse() for d in dense])
    assert out.layout == torch.sparse_coo and out.dtype == torch.float32
    assert torch.equal(out.to_dense(), torch.stack(dense).float())
    out = tb.collate([d.to_sparse_csr() for d in dense])
    assert out.is_sparse and torch.equal(out.to_dense(), torch.stack(dense).float())
    with pytest.raises(ValueError, match=r"sample \[1\] has shape \(3,\)"):
        tb.collate([torch.zeros(2).to_sparse(), torch.zeros(3).to_sparse()])


def test_scipy_sparse_samples():
    sp = optional("scipy.sparse")
    m = sp.csr_array(np.array([[0.0, 1.0], [2.0, 0.0]]))
    assert tb.to_tensor(m).layout == torch.sparse_csr
    out = tb.collate([m, m * 2])
    assert out.is_sparse and out.dtype == torch.float32
    assert torch.equal(out.to_dense(), torch.tensor([[[0, 1], [2, 0]], [[0, 2], [4, 0]]],
                                                    dtype=torch.float32))


def test_pandas_series_samples_go_through_to_tensor():
    pd = optional("pandas")
    s = [pd.Series([1.0, 2.0]) * i for i in range(3)]
    out = tb.collate(s)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]))


def test_pandas_frame_and_arrow_samples():
    pd = optional("pandas")
    frames = [pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4]}) * (i + 1) for i in range(2)]
    out = tb.collate([{"f": f} for f in frames])["f"]
    assert out.dtype == torch.float32 and out.shape == (2, 2, 2)
    assert torch.equal(out, torch.tensor([[[1, 3], [2, 4]], [[2, 6], [4, 8]]],
                                         dtype=torch.float32))
    pa = optional("pyarrow")
    out = tb.collate([pa.array([1.0, 2.0]), pa.array([3.0, 4.0])])
    assert out.dtype == torch.float32 and out.tolist() == [[1, 2], [3, 4]]
    ints = tb.collate([pa.array([1, 2], type=pa.int32())] * 3)
    assert ints.dtype == torch.int32 and ints.shape == (3, 2)


def test_pin_memory_without_an_accelerator_warns_once(monkeypatch):
    if HAS_CUDA:
        pytest.skip("an accelerator is present: pin_memory pins")
    monkeypatch.setattr(_collate, "_pin_warned", False)
    with pytest.warns(UserWarning, match=r"collate\(pin_memory=True\): no accelerator is "
                      r"available, so the batch is not pinned"):
        out = tb.collate([np.zeros(2), np.ones(2)], pin_memory=True)
    assert not out.is_pinned() and out.tolist() == [[0, 0], [1, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tb.collate([np.zeros(2)], pin_memory=True)  # once only


@needs_cuda
def test_pin_memory_pins_in_the_main_process():
    out = tb.collate([{"x": np.zeros((3, 3)), "y": torch.ones(2), "label": 1, "w": 0.5}] * 4,
                     pin_memory=True)
    assert out["x"].is_pinned() and out["y"].is_pinned()
    assert out["label"].is_pinned() and out["w"].is_pinned()
    assert out["label"].tolist() == [1] * 4 and out["w"].dtype == torch.float32
    assert out["x"].dtype == torch.float32


def test_shared_allocator_gives_shared_memory():
    t = _collate._shared_empty((4, 3), torch.float32)
    assert t.is_shared() and t.shape == (4, 3) and t.is_contiguous()
    z = _collate._shared_empty((0, 3), torch.float32)
    assert z.shape == (0, 3)


def test_allocator_result_is_checked():
    with pytest.raises(ValueError, match=r"must return a contiguous CPU tensor of shape "
                       r"\(2, 3\) and dtype float32"):
        tb._C._collate_stack([np.zeros(3)] * 2, "sample", torch.float32,
                             lambda shape, dtype: torch.empty(3))
    with pytest.raises(TypeError, match="returned list"):
        tb._C._collate_stack([np.zeros(3)] * 2, "sample", torch.float32,
                             lambda shape, dtype: [])


class _Images(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": np.full((3, 4, 4), float(i)), "y": i, "n": f"s{i}"}


def _collate_and_report(samples):
    """In the worker: the batch and whether its big leaf is in shared memory."""
    batch = tb.collate(samples)
    batch["shared_in_worker"] = batch["x"].is_shared() and batch["y"].is_shared()
    return batch


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_collate_into_shared_memory(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    loader = DataLoader(_Images(), batch_size=4, num_workers=2,
                        collate_fn=_collate_and_report,
                        multiprocessing_context=method)
    batches = list(loader)
    assert len(batches) == 2
    for k, b in enumerate(batches):
        assert b["shared_in_worker"] is True
        assert b["x"].is_shared() and b["x"].dtype == torch.float32
        expect = torch.stack([torch.full((3, 4, 4), float(4 * k + j)) for j in range(4)])
        assert torch.equal(b["x"], expect)
        assert torch.equal(b["y"], torch.arange(4 * k, 4 * k + 4))
        assert b["n"] == [f"s{4 * k + j}" for j in range(4)]


def test_main_process_collate_is_not_shared():
    out = tb.collate([np.zeros((64, 64))] * 4)
    assert not out.is_shared()
