"""Optional packages (pandas, SciPy, pyarrow, polars, Ray, ml_dtypes) are
imported only when an input is theirs: `import torchbridge` and converting
plain arrays, tensors and trees must not pull them in (import time, and a
broken optional install must not break torchbridge)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

OPTIONAL = ("pandas", "scipy", "pyarrow", "polars", "ray", "ml_dtypes", "datasets",
            "lightning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_plain_use_imports_no_optional_package():
    loaded = _run(f"""
        import sys
        import numpy as np, torch
        import torchbridge as tb
        tb.to_tensor(np.ones(3)); tb.to_tensor([np.ones(2), np.ones(2)])
        tb.to_numpy(torch.ones(2, requires_grad=True))
        tb.tree_to_tensor({{"a": np.ones(2), "s": "text", "o": object(), "n": None}})
        tb.tree_to_numpy([torch.ones(1), 3])
        try:
            tb.to_tensor({{"a": 1}})
        except TypeError:
            pass
        print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))
    """)
    assert loaded == "[]"


def test_a_broken_optional_package_does_not_break_torchbridge(tmp_path):
    # A pandas that fails to import (as pandas 3 does on NumPy 1.26) must
    # not matter to code that never hands torchbridge a pandas object.
    (tmp_path / "pandas").mkdir()
    (tmp_path / "pandas" / "__init__.py").write_text("raise ImportError('broken')\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run(
        [sys.executable, "-c",
         "import numpy as np, torchbridge as tb; print(tb.to_tensor(np.ones(2)).tolist(),"
         " tb.tree_to_tensor({'a': np.ones(1), 'b': 'x'})['b'])"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 1.0] x"
