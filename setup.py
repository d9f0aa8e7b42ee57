"""Builds torchbridge._C: the C++ core, the operators and the NumPy bridge.

    pip install torch==2.13.0          # first: an unpinned torch pulls CUDA
    pip install --no-build-isolation -e .

--no-build-isolation makes the build use the installed torch (an isolated
build environment would download another one). Sources are globbed by folder
so that this file and CMakeLists.txt cannot drift apart.
"""

import glob
import json
import os
import platform
import re
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _version():
    text = open(os.path.join(ROOT, "torchbridge", "_version.py")).read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def _sources(*folders):
    out = []
    for folder in folders:
        out += sorted(glob.glob(f"csrc/{folder}/*.cpp", root_dir=ROOT))
    return out


def _extensions():
    import numpy
    import torch
    from torch.utils.cpp_extension import CppExtension

    info = {
        "version": _version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
        "numpy_headers": numpy.__version__,
    }
    # Read by torchbridge/_load.py to explain a failed import.
    with open(os.path.join(ROOT, "torchbridge", "_build_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    if int(numpy.__version__.split(".")[0]) < 2:
        # NumPy 2 headers build one binary for NumPy 1.22+ and 2.x; 1.x
        # headers would not run under NumPy 2.
        sys.exit("torchbridge must be built against NumPy >= 2 headers "
                 f"(found {numpy.__version__}); pip install 'numpy>=2' first.")
    macros = [
        # csrc/ops/meta.cpp: Python uses the fakes of torchbridge/_fake.py.
        ("TORCHBRIDGE_PYTHON_EXTENSION", "1"),
        ("TORCHBRIDGE_VERSION", f'"{info["version"]}"'),
        ("TORCHBRIDGE_BUILT_TORCH", f'"{info["torch"]}"'),
        ("TORCHBRIDGE_BUILT_NUMPY", f'"{info["numpy_headers"]}"'),
        ("TORCHBRIDGE_BUILT_CUDA", f'"{info["cuda"]}"'),
    ]
    debug = os.environ.get("DEBUG", "0") == "1"
    return [
        CppExtension(
            "torchbridge._C",
            _sources("format", "core", "ops", "python"),
            include_dirs=[os.path.join(ROOT, "csrc", "include"),
                          numpy.get_include()],
            define_macros=macros,
            libraries=["z"],  # zlib, for .npz (csrc/format/zip.cpp)
            # Hidden by default: only PyInit__C is exported, so calls between
            # our files bind directly instead of through the PLT (measured
            # ~30 ns of a 460 ns to_tensor once core and front-end split).
            extra_compile_args=(["-O0", "-g"] if debug else ["-O3"])
            + ["-fvisibility=hidden", "-fvisibility-inlines-hidden"],
        )
    ]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(no_python_abi_suffix=False)}


setup(
    name="torchbridge",
    version=_version(),
    description="Safe, zero-copy, fast NumPy <-> PyTorch conversion",
    packages=find_packages(include=["torchbridge", "torchbridge.*"]),
    package_data={"torchbridge": ["py.typed", "*.pyi", "_build_info.json"]},
    ext_modules=_extensions(),
    cmdclass=_cmdclass(),
    python_requires=">=3.9",
    # No pin here: the environment's torch is used (see the docstring).
    install_requires=["torch>=2.4", "numpy>=1.22"],
    extras_require={"ml_dtypes": ["ml_dtypes>=0.4"]},
)
