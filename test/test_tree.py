"""tb.tree_to_tensor / tb.tree_to_numpy: structure and container types kept."""

from __future__ import annotations

import copy
import dataclasses
import types
from collections import Counter, OrderedDict, defaultdict, namedtuple
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pytest
import torch

import torchbridge as tb

Point = namedtuple("Point", ["x", "y"])


class Pair(NamedTuple):
    first: object
    second: object = None


class MyList(list):
    pass


class MyTuple(tuple):
    pass


class MyDict(dict):
    pass


class ReadOnlyMapping(Mapping):
    """A Mapping that is not a dict."""

    def __init__(self, **kw):
        self._d = dict(kw)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


@dataclasses.dataclass
class Batch:
    x: object
    y: object
    name: str = "batch"


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: object
    meta: object = None


@dataclasses.dataclass
class WithLateField:
    x: object
    cache: object = dataclasses.field(init=False, default=None)


@dataclasses.dataclass
class WithPostInit:
    x: object
    n: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.n = len(self.x)


def arr(*vals, dtype=np.float32):
    return np.array(vals, dtype=dtype)


def is_t(x, values=None, dtype=None):
    ok = type(x) is torch.Tensor
    if ok and values is not None:
        ok = x.tolist() == values
    if ok and dtype is not None:
        ok = x.dtype == dtype
    return ok


# ------------------------------------------------- containers

def test_dict_values_are_converted_keys_kept():
    a, b = arr(1, 2), arr(3)
    tree = {"a": a, "b": b, 3: "s"}
    out = tb.tree_to_tensor(tree)
    assert type(out) is dict and list(out) == ["a", "b", 3]
    assert is_t(out["a"], [1, 2]) and is_t(out["b"], [3])
    assert out["a"].data_ptr() == a.ctypes.data  # the leaf rule: shared
    assert out[3] == "s"


def test_ordered_dict_keeps_type_and_order():
    tree = OrderedDict([("z", arr(1)), ("a", arr(2)), ("m", 5)])
    out = tb.tree_to_tensor(tree)
    assert type(out) is OrderedDict and list(out) == ["z", "a", "m"]
    assert is_t(out["z"], [1]) and out["m"] == 5


def test_defaultdict_keeps_type_and_default_factory():
    tree = defaultdict(list, {"a": arr(1.0)})
    out = tb.tree_to_tensor(tree)
    assert type(out) is defaultdict and out.default_factory is list
    assert is_t(out["a"], [1.0])
    assert out["missing"] == []
    assert "missing" not in tree  # the input's factory was not triggered


def test_dict_subclass_keeps_type_and_attributes():
    tree = MyDict(a=arr(1))
    tree.note = "kept"
    out = tb.tree_to_tensor(tree)
    assert type(out) is MyDict and out.note == "kept" and is_t(out["a"], [1])


def test_counter_keeps_type():
    out = tb.tree_to_tensor(Counter(a=np.int64(3)))
    assert type(out) is Counter and is_t(out["a"], 3)


@pytest.mark.parametrize("mapping", [
    ReadOnlyMapping(a=arr(1), b="x"),
    types.MappingProxyType({"a": arr(1), "b": "x"}),
], ids=["custom", "mappingproxy"])
def test_other_mappings_become_dict(mapping):
    out = tb.tree_to_tensor(mapping)
    assert type(out) is dict and list(out) == ["a", "b"]
    assert is_t(out["a"], [1]) and out["b"] == "x"


def test_list_and_tuple_are_kept():
    out = tb.tree_to_tensor([arr(1), (arr(2), "s"), []])
    assert type(out) is list and type(out[1]) is tuple
    assert is_t(out[0], [1]) and is_t(out[1][0], [2]) and out[1][1] == "s"
    assert out[2] == []


def test_namedtuples_keep_type_and_fields():
    out = tb.tree_to_tensor(Point(arr(1), arr(2)))
    assert type(out) is Point and is_t(out.x, [1]) and is_t(out.y, [2])
    out2 = tb.tree_to_tensor(Pair(arr(3)))
    assert type(out2) is Pair and is_t(out2.first, [3]) and out2.second is None


def test_list_and_tuple_subclasses_keep_type():
    out = tb.tree_to_tensor(MyList([arr(1)]))
    assert type(out) is MyList and is_t(out[0], [1])
    out = tb.tree_to_tensor(MyTuple((arr(1), 2)))
    assert type(out) is MyTuple and is_t(out[0], [1]) and out[1] == 2


def test_dataclass_is_rebuilt():
    b = Batch(x=arr(1, 2), y=[arr(3)])
    out = tb.tree_to_tensor(b)
    assert type(out) is Batch and out is not b
    assert is_t(out.x, [1, 2]) and is_t(out.y[0], [3]) and out.name == "batch"


def test_frozen_dataclass_is_rebuilt():
    f = Frozen(x=arr(1), meta={"k": arr(2)})
    out = tb.tree_to_tensor(f)
    assert type(out) is Frozen and is_t(out.x, [1]) and is_t(out.meta["k"], [2])
    assert isinstance(f.x, np.ndarray)


def test_dataclass_init_false_field_is_converted_too():
    w = WithLateField(x=arr(1))
    w.cache = arr(9)
    out = tb.tree_to_tensor(w)
    assert type(out) is WithLateField
    assert is_t(out.x, [1]) and is_t(out.cache, [9])
    assert isinstance(w.cache, np.ndarray)


def test_dataclass_with_post_init_field():
    w = WithPostInit(x=arr(1, 2, 3))
    out = tb.tree_to_tensor(w)
    assert is_t(out.x, [1, 2, 3]) and out.n == 3


def test_dataclass_unset_init_false_field_is_skipped():
    @dataclasses.dataclass
    class Lazy:
        x: object
        later: object = dataclasses.field(init=False)

    out = tb.tree_to_tensor(Lazy(arr(1)))
    assert is_t(out.x, [1]) and not hasattr(out, "later")


def test_dataclass_type_is_a_plain_leaf():
    assert tb.tree_to_tensor(Batch) is Batch


def test_deep_nesting():
    tree = {"a": [Point(arr(1), {"b": (arr(2), Batch(arr(3), None))})]}
    out = tb.tree_to_tensor(tree)
    inner = out["a"][0]
    assert type(inner) is Point and is_t(inner.x, [1])
    assert is_t(inner.y["b"][0], [2]) and is_t(inner.y["b"][1].x, [3])
    assert inner.y["b"][1].y is None


# ------------------------------------------------- leaves

def test_numpy_scalars_and_tensors_are_leaves():
    t64 = torch.ones(2, dtype=torch.float64)
    out = tb.tree_to_tensor([np.float64(2.5), np.int8(3), t64, np.bool_(True)])
    assert is_t(out[0], 2.5, torch.float32) and out[0].dim() == 0
    assert is_t(out[1], 3, torch.int8)
    assert is_t(out[2], [1, 1], torch.float32)  # the float policy applies
    assert is_t(out[3], True, torch.bool)


def test_tensor_leaf_with_nothing_to_change_is_the_same_object():
    t = torch.ones(2)
    assert tb.tree_to_tensor([t])[0] is t


def test_other_leaves_are_the_same_objects():
    obj, s, f, big = object(), "text", 2.5, 10 ** 30
    fn = len
    tree = [obj, s, None, 3, f, big, True, b"bytes", {1, 2}, fn, 1j]
    out = tb.tree_to_tensor(tree)
    assert out is not tree
    assert all(o is i for o, i in zip(out, tree))


def test_python_lists_of_numbers_are_containers_not_leaves():
    out = tb.tree_to_tensor({"l": [1.0, 2.0]})
    assert out["l"] == [1.0, 2.0] and type(out["l"][0]) is float


def test_leaf_as_the_whole_tree():
    assert is_t(tb.tree_to_tensor(arr(1, 2)), [1, 2])
    assert tb.tree_to_tensor("s") == "s"
    assert tb.tree_to_tensor(None) is None


# ------------------------------------------------- the input is never mutated

def test_input_is_never_mutated():
    inner = [arr(1)]
    tree = {
        "d": OrderedDict(k=arr(2)),
        "dd": defaultdict(int, z=arr(3)),
        "l": inner,
        "t": (arr(4),),
        "nt": Point(arr(5), "p"),
        "dc": Batch(arr(6), inner),
        "fz": Frozen(arr(7)),
        "late": WithLateField(arr(8)),
    }
    snapshot = copy.deepcopy(tree)
    ids = {k: id(v) for k, v in tree.items()}
    out = tb.tree_to_tensor(tree)
    assert {k: id(v) for k, v in tree.items()} == ids
    assert tree["l"] is inner and tree["dc"].y is inner
    assert isinstance(inner[0], np.ndarray)
    for key in tree:
        assert out[key] is not tree[key]

    def same(a, b):
        if isinstance(a, np.ndarray):
            return type(b) is np.ndarray and np.array_equal(a, b)
        if dataclasses.is_dataclass(a):
            return type(a) is type(b) and all(
                same(getattr(a, f.name, None), getattr(b, f.name, None))
                for f in dataclasses.fields(a))
        if isinstance(a, Mapping):
            return type(a) is type(b) and list(a) == list(b) and all(
                same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(
                same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(tree, snapshot)


def test_tree_to_numpy_does_not_mutate_input():
    t = torch.ones(2)
    tree = {"a": [t]}
    out = tb.tree_to_numpy(tree)
    assert tree["a"][0] is t and isinstance(out["a"][0], np.ndarray)


# ------------------------------------------------- keywords

def test_keywords_are_passed_through_to_tensor():
    tree = {"a": arr(1, 2, dtype=np.float64), "b": [np.int32(3)]}
    out = tb.tree_to_tensor(tree, dtype=torch.float16)
    assert is_t(out["a"], [1, 2], torch.float16) and is_t(out["b"][0], 3, torch.float16)
    out = tb.tree_to_tensor(tree, float_dtype=None)
    assert out["a"].dtype == torch.float64


def test_copy_keyword_is_passed_through():
    a = arr(1, 2)
    out = tb.tree_to_tensor({"a": a}, copy=True)
    assert out["a"].data_ptr() != a.ctypes.data
    with pytest.raises(ValueError, match="copy=None"):
        tb.tree_to_tensor({"a": a[::-1]}, copy=False)


def test_requires_grad_keyword_is_passed_through():
    out = tb.tree_to_tensor([arr(1.0)], requires_grad=True)
    assert out[0].requires_grad and out[0].is_leaf


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        tb.tree_to_tensor({"a": arr(1)}, bogus=1)


def test_errors_in_leaves_propagate():
    with pytest.raises(TypeError, match="datetime64"):
        tb.tree_to_tensor({"a": [np.zeros(2, "M8[s]")]})


TEXT = np.array(["a", "b"])


@pytest.mark.parametrize("tree, where", [
    ({"text": [arr(1), arr(2), arr(3), TEXT]}, 'tree["text"][3]'),
    ([arr(1), (arr(2), TEXT)], "tree[1][1]"),
    ({"p": Point(x=arr(1), y=TEXT)}, 'tree["p"].y'),
    (Pair(first={"k": TEXT}), 'tree.first["k"]'),
    (OrderedDict(a=arr(1), b=TEXT), 'tree["b"]'),
    (MyList([arr(1), TEXT]), "tree[1]"),
    (ReadOnlyMapping(m=TEXT), 'tree["m"]'),
    ({7: TEXT}, "tree[7]"),
    ({('a', 1): TEXT}, "tree[('a', 1)]"),
    ({'say "hi"\\': TEXT}, 'tree["say \\"hi\\"\\\\"]'),
    (TEXT, None),
])
def test_an_error_names_the_key_path_of_its_leaf(tree, where):
    with pytest.raises(TypeError) as info:
        tb.tree_to_tensor(tree)
    msg = str(info.value)
    assert "torch has no string tensors" in msg  # the leaf's own reason kept
    if where is None:  # the whole tree is the leaf: nothing to name
        assert msg.startswith("to_tensor: ")
    else:
        assert msg.startswith(f"tree_to_tensor: at {where}: to_tensor: "), msg


def test_key_path_in_dataclass_fields_and_keyword_errors():
    @dataclasses.dataclass
    class Sample:
        image: object
        label: object

    with pytest.raises(ValueError, match=r'^tree_to_tensor: at tree\[0\]\.label: '
                       r"to_tensor\(copy=False\)"):
        tb.tree_to_tensor([Sample(torch.ones(1), torch.ones(1, dtype=torch.float64))],
                          copy=False)


def test_the_failing_exception_keeps_its_type_and_a_second_call_is_clean():
    tree = {"a": [TEXT]}
    for _ in range(2):  # the recorded path does not leak into the next error
        with pytest.raises(TypeError) as info:
            tb.tree_to_tensor(tree)
        assert str(info.value).count("tree_to_tensor: at ") == 1
        assert not hasattr(info.value, "_torchbridge_path")


def test_tree_to_numpy_error_names_the_key_path():
    with pytest.raises(ValueError, match=r'^tree_to_numpy: at tree\["w"\]\[0\]: to_numpy'):
        tb.tree_to_numpy({"w": [torch.empty(2, device="meta")]})


class DLPackProducer:
    """Exports through DLPack only (as CuPy or JAX arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_producers_are_leaves():
    a = np.arange(4.0)
    tree = {"x": DLPackProducer(a), "n": [DLPackProducer(np.arange(3, dtype=np.int32))]}
    out = tb.tree_to_tensor(tree)
    assert is_t(out["x"], [0, 1, 2, 3], torch.float32)  # the float policy
    assert is_t(out["n"][0], [0, 1, 2], torch.int32)
    assert out["n"][0].data_ptr() == tree["n"][0]._a.ctypes.data  # shared
    back = tb.tree_to_numpy(tree)
    assert isinstance(back["x"], np.ndarray) and back["x"].ctypes.data == a.ctypes.data


def test_pandas_scalars_stay_leaves_but_containers_convert():
    from conftest import optional

    pd = optional("pandas")
    ts, na = pd.Timestamp("2024-01-01"), pd.NA
    out = tb.tree_to_tensor({"t": ts, "na": na, "s": pd.Series([1.0, 2.0])})
    assert out["t"] is ts and out["na"] is na
    assert is_t(out["s"], [1, 2], torch.float32)


def test_scipy_sparse_is_a_leaf():
    from conftest import optional

    sp = optional("scipy.sparse")
    m = sp.csr_array(np.eye(3, dtype=np.float32))
    out = tb.tree_to_tensor({"m": m, "k": [m]})
    for t in (out["m"], out["k"][0]):
        assert t.layout == torch.sparse_csr
        assert np.array_equal(t.to_dense().numpy(), np.eye(3))


def test_arrow_producers_are_leaves():
    from conftest import optional

    pa = optional("pyarrow")
    col = pa.array([1.0, None, 3.0])
    out = tb.tree_to_tensor({"c": col, "t": pa.table({"a": [1, 2]})})
    assert torch.equal(out["c"], torch.tensor([1.0, float("nan"), 3.0]), ) or \
        torch.allclose(out["c"], torch.tensor([1.0, float("nan"), 3.0]), equal_nan=True)
    assert is_t(out["t"], [[1], [2]], torch.int64)


# ------------------------------------------------- tree_to_numpy

def test_tree_to_numpy_converts_tensor_leaves_and_keeps_structure():
    w = torch.ones(2, requires_grad=True)
    tree = OrderedDict(
        w=w,
        bf=torch.ones(1, dtype=torch.bfloat16),
        nt=Point(torch.zeros(1), "s"),
        dc=Batch(torch.arange(2), np.float32(1)),
    )
    out = tb.tree_to_numpy(tree)
    assert type(out) is OrderedDict and list(out) == ["w", "bf", "nt", "dc"]
    assert isinstance(out["w"], np.ndarray) and out["w"].ctypes.data == w.data_ptr()
    assert out["bf"].dtype == np.float32
    assert type(out["nt"]) is Point and out["nt"].y == "s"
    assert type(out["dc"]) is Batch and out["dc"].x.tolist() == [0, 1]
    y = out["dc"].y
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == np.float32


def test_tree_to_numpy_returns_ndarrays_as_is_and_other_leaves_unchanged():
    a = np.ones(2)
    obj = object()
    out = tb.tree_to_numpy([a, obj, 1.5, "s", None])
    assert out[0] is a and out[1] is obj and out[2] == 1.5 and out[3] == "s"
    assert out[4] is None


def test_tree_to_numpy_keywords_are_passed_through():
    out = tb.tree_to_numpy({"a": torch.ones(2)}, dtype=np.float64)
    assert out["a"].dtype == np.float64
    t = torch.ones(2)
    out = tb.tree_to_numpy([t], copy=True)
    assert out[0].ctypes.data != t.data_ptr()
    with pytest.raises(ValueError, match="copy=None"):
        tb.tree_to_numpy([torch.ones(1, dtype=torch.bfloat16)], copy=False)


def test_round_trip_of_a_tree_shares_memory():
    src = {"a": [arr(1, 2)], "b": Point(arr(3), arr(4, dtype=np.int64))}
    back = tb.tree_to_numpy(tb.tree_to_tensor(src))
    assert np.shares_memory(back["a"][0], src["a"][0])
    assert np.shares_memory(back["b"].y, src["b"].y)


def test_batched_path_finds_the_failing_leaf_one_by_one():
    # The device path converts all leaves in one call; its error is traced
    # back to a key path by converting one by one (no GPU needed to check).
    from torchbridge import _tree

    calls = []

    def batch(leaves):
        calls.append(len(leaves))
        for leaf in leaves:
            if leaf.dtype.kind == "U":
                raise TypeError("to_tensor: text")
        return [torch.from_numpy(leaf) for leaf in leaves]

    tree = {"a": [arr(1), arr(2)], "b": {"c": TEXT}}
    with pytest.raises(TypeError, match=r'^tree_to_tensor: at tree\["b"\]\["c"\]: to_tensor: text$'):
        try:
            _tree._batched(tree, lambda leaf: True, None, batch)
        except Exception as e:
            raise _tree._with_path(e, "tree_to_tensor")
    assert calls == [3, 1, 1, 1]  # the batch, then one by one up to the culprit
    ok = _tree._batched({"a": [arr(1)]}, lambda leaf: True, None, batch)
    assert is_t(ok["a"][0], [1], torch.float32)
