"""Writes .npy/.npz files with NumPy itself for test_npy (C++).

    python make_numpy_files.py OUT_DIR

Run by CTest as the `npy.numpy_files` fixture; the files are generated on
every run and never committed. OUT_DIR/manifest.txt lists them, one per line:

    npy    FILE DTYPE SHAPE FORTRAN BYTEORDER VERSION
    npz    FILE COMPRESSED COUNT       (then COUNT lines:)
    member NAME DTYPE SHAPE FORTRAN
    many   FILE COUNT                  (member aI holds int32 I)
    same   FILE DTYPE SHAPE FORTRAN    (numpy.save output: compare bytes)
    refuse FILE TEXT                   (must fail with TEXT in the message)
    refusez FILE TEXT                  (the same, for npz::load)
    skip   REASON                      (NumPy is missing: skip with REASON)

SHAPE is "3x4", "0x3" or "-" (0-d); FORTRAN 0/1; BYTEORDER "<", ">" or "|".
Values follow one rule that test_npy.cpp recomputes (expected_values there):
element i (C order) of an integer array is ((7 i) % 127 - 60) * M (unsigned:
(7 i) % 127 * M) with M = 1, 251, 16000057 or 1099511627791 by item size;
bool: i % 3 == 0; floats: v * 0.25 + 0.125 with v = (7 i) % 127 - 60;
complex: v * 0.25 - (v * 0.5 + 1) j.
"""

import os
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
manifest = open(os.path.join(out, "manifest.txt"), "w")

try:
    import numpy as np
except ImportError as e:  # skip cleanly, saying why
    print(f"NumPy is not importable by {sys.executable} ({e}): the C++ tests "
          "of NumPy-written files will be skipped.")
    manifest.write(f"skip NumPy is not importable by {sys.executable}\n")
    sys.exit(0)

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "float16", "float32", "float64", "complex64",
          "complex128"]
MULT = {1: 1, 2: 251, 4: 16000057, 8: 1099511627791}


def values(dtype, shape):
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    v = (i * 7) % 127 - 60
    if dt.kind == "b":
        a = i % 3 == 0
    elif dt.kind == "i":
        a = (v * MULT[dt.itemsize]).astype(dt)
    elif dt.kind == "u":
        a = (((i * 7) % 127) * MULT[dt.itemsize]).astype(dt)
    elif dt.kind == "f":
        a = (v * 0.25 + 0.125).astype(dt)
    else:
        a = (v * 0.25 - (v * 0.5 + 1) * 1j).astype(dt)
    return a.reshape(shape)


def shape_str(shape):
    return "x".join(str(d) for d in shape) if shape else "-"


def layout(a, fortran, order):
    # np.array, not asfortranarray/ascontiguousarray, which make 0-d arrays 1-d
    a = np.array(a, order="F" if fortran else "C")
    if order in "<>":
        a = a.astype(a.dtype.newbyteorder(order))
    return a


count = 0
# Every dtype x byte order x memory order x format version.
for dtype in DTYPES:
    single = np.dtype(dtype).itemsize == 1
    for order in ("|",) if single else ("<", ">"):
        for fortran in (False, True):
            for version in ((1, 0), (2, 0), (3, 0)):
                a = layout(values(dtype, (3, 4)), fortran, order)
                name = (f"{dtype}_{'be' if order == '>' else 'le'}_"
                        f"{'F' if fortran else 'C'}_v{version[0]}.npy")
                with open(os.path.join(out, name), "wb") as f:
                    np.lib.format.write_array(f, a, version=version)
                manifest.write(f"npy {name} {dtype} 3x4 {int(fortran)} "
                               f"{order} {version[0]}\n")
                count += 1

# Shapes: 0-d, zero-size, 1-d, higher ranks, both orders, numpy.save itself.
SHAPES = [((), False), ((0,), False), ((0, 3), False), ((2, 0, 3), True),
          ((5,), False), ((2, 3, 4), True), ((1, 1, 1, 7), False),
          ((4, 1, 3), True), ((1000, 33), False)]
for dtype in DTYPES:
    for shape, fortran in SHAPES:
        a = layout(values(dtype, shape), fortran, "=")
        name = f"{dtype}_{shape_str(shape)}_{'F' if fortran else 'C'}.npy"
        np.save(os.path.join(out, name), a)
        # numpy.save writes Fortran order only for arrays that are F- but
        # not C-contiguous.
        f_order = a.flags.f_contiguous and not a.flags.c_contiguous
        bo = "|" if a.dtype.itemsize == 1 else "<"
        manifest.write(f"npy {name} {dtype} {shape_str(shape)} {int(f_order)} "
                       f"{bo} 1\n")
        manifest.write(f"same {name} {dtype} {shape_str(shape)} {int(f_order)}\n")
        count += 1

# NumPy's maximum rank in 1.x (32), and a big-endian array large enough for
# the byte swap to run over many pages.
rank32 = (1,) * 31 + (3,)
np.save(os.path.join(out, "rank32.npy"), values("float32", rank32))
manifest.write(f"npy rank32.npy float32 {shape_str(rank32)} 0 < 1\n")
big = layout(values("float64", (300, 1000)), False, ">")
np.save(os.path.join(out, "big_be.npy"), big)
manifest.write("npy big_be.npy float64 300x1000 0 > 1\n")


def members():
    m = {}
    for dtype in DTYPES:
        m[dtype] = (values(dtype, (3, 4)), False)
        m[dtype + "_F"] = (np.array(values(dtype, (3, 4)), order="F"), True)
        m[dtype + "_scalar"] = (values(dtype, ()), False)
        m[dtype + "_empty"] = (values(dtype, (0, 3)), False)
    return m


for fname, compressed in (("savez.npz", False), ("savez_compressed.npz", True)):
    m = members()
    save = np.savez_compressed if compressed else np.savez
    save(os.path.join(out, fname), **{k: a for k, (a, _) in m.items()})
    manifest.write(f"npz {fname} {int(compressed)} {len(m)}\n")
    for k, (a, fortran) in m.items():
        manifest.write(f"member {k} {k.split('_')[0]} {shape_str(a.shape)} "
                       f"{int(fortran)}\n")

# More than 65535 members: Python's zipfile writes zip64 end records.
n_many = 65537
np.savez(os.path.join(out, "many.npz"),
         **{f"a{i}": np.int32(i) for i in range(n_many)})
manifest.write(f"many many.npz {n_many}\n")

# Headers NumPy accepts that numpy.save does not write: keys in another
# order, double quotes, no trailing comma, Python 2 long literals (3L).
def raw_npy(name, header, data, version=1):
    header = header.encode("latin1")
    pre = 6 + 2 + (2 if version == 1 else 4)
    pad = -(pre + len(header) + 1) % 64
    header += b" " * pad + b"\n"
    size = len(header).to_bytes(2 if version == 1 else 4, "little")
    with open(os.path.join(out, name), "wb") as f:
        f.write(b"\x93NUMPY" + bytes([version, 0]) + size + header + data)


raw_npy("reordered.npy",
        '{"shape": (3, 4), "fortran_order": False, "descr": "<f4"}',
        values("float32", (3, 4)).astype("<f4").tobytes())
manifest.write("npy reordered.npy float32 3x4 0 < 1\n")
raw_npy("py2_long.npy",
        "{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 4L), }",
        values("int64", (3, 4)).astype("<i8").tobytes())
manifest.write("npy py2_long.npy int64 3x4 0 < 1\n")
import warnings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # NumPy warns about the Python 2 header
    for name in ("reordered.npy", "py2_long.npy"):
        assert np.load(os.path.join(out, name)).shape == (3, 4), name

# Files NumPy writes that torchbridge must refuse, with the reason.
np.save(os.path.join(out, "object.npy"), np.array([1, "a", None], dtype=object),
        allow_pickle=True)
manifest.write("refuse object.npy object array\n")
np.save(os.path.join(out, "datetime.npy"), np.array(["2024-01-01"], "M8[D]"))
manifest.write("refuse datetime.npy datetime64\n")
np.save(os.path.join(out, "strings.npy"), np.array(["ab", "c"]))
manifest.write("refuse strings.npy string dtype\n")
np.save(os.path.join(out, "structured.npy"),
        np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]))
manifest.write("refuse structured.npy structured\n")
try:
    import ml_dtypes

    np.save(os.path.join(out, "bfloat16.npy"),
            np.ones(4, dtype=ml_dtypes.bfloat16))
    manifest.write("refuse bfloat16.npy has no torch dtype\n")
except ImportError:
    pass

# Zip archives Python's zipfile writes that are not .npz archives of .npy
# members: npz::load must refuse them, naming the member.
import io  # noqa: E402
import zipfile  # noqa: E402

one = io.BytesIO()
np.save(one, values("float32", (3,)))
for fname, member, method, text in (
        ("short_name.npz", "py", zipfile.ZIP_STORED, "does not end in"),
        ("txt_member.npz", "a.txt", zipfile.ZIP_STORED, "does not end in"),
        ("bzip2.npz", "a.npy", zipfile.ZIP_BZIP2, "compression method 12"),
        ("lzma.npz", "a.npy", zipfile.ZIP_LZMA, "compression method 14"),
        ("not_npy_inside.npz", "a.npy", zipfile.ZIP_DEFLATED, "not a .npy file")):
    with zipfile.ZipFile(os.path.join(out, fname), "w", method) as zf:
        zf.writestr(member, b"no magic here" if fname.startswith("not_npy")
                    else one.getvalue())
    manifest.write(f"refusez {fname} {text}\n")

manifest.close()
print(f"wrote {count} .npy files, 3 .npz archives and the refusal cases to "
      f"{out} with NumPy {np.__version__}")
