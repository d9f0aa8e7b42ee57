#!/usr/bin/env bash
# One-off diagnosis on the GPU box (not committed).
export PYTHONUNBUFFERED=1
MAX_JOBS=16 python3 -m pip install -q --no-build-isolation --no-deps --use-pep517 -e . > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
python3 - <<'PY' 2>&1 | tee $OUT/numpy_probe.txt
import numpy as np, sys
print(sys.version, np.__version__)
for obj in ([[1.0, 2.0], [3.0, 4.0], [5.0]], [[[1, 2], [3, 4]], [[1, 2], [3]]]):
    try: np.asarray(obj); print("no error")
    except Exception as e: print(type(e).__name__, e)
a = np.array([[1, 2], [3, 4, 5]], dtype=object)
print(a.shape, a.dtype, a.ravel().tolist(), type(a.ravel().tolist()[0]))
PY
timeout 120 cuda-gdb -q -batch -ex run -ex bt --args python3 -c "
import torchbridge as tb, numpy as np
arr = np.array([[1, 2], [3, 4, 5]], dtype=object)
try: tb.to_tensor(arr)
except TypeError as e: print('TypeError', e)
print('survived')
" > $OUT/gdb.txt 2>&1; grep -E "^#|survived|TypeError|signal" $OUT/gdb.txt | head -30
timeout 100 python3 -m pytest test/test_dtypes.py test/test_to_tensor.py test/test_leaks.py -q -p no:cacheprovider -rf --deselect test/test_dtypes.py::test_object_array_from_ragged_lists_names_the_element 2>&1 | tee $OUT/pytest.log | grep -E "^FAILED|passed|failed|Fatal|File \"/work" | head -40
