"""Builds the Cython engine; everything else is in pyproject.toml.

KVMSIM_DEBUG=1 builds it for hunting memory errors: Cython's bounds and initialisation
checks on, -O1 -g, AddressSanitizer and UBSan (run it with libasan preloaded: .ci/run).
"""
import importlib
import os
import sys
import types

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def generate_spec_pxd() -> None:
    """kvmsim/_spec.pxd from its template and kvmsim/_spec.py, without importing kvmsim
    (its __init__ needs the engine this build makes)."""
    package = types.ModuleType("kvmsim")
    package.__path__ = [os.path.join(HERE, "kvmsim")]
    saved = sys.modules.get("kvmsim")
    sys.modules["kvmsim"] = package
    try:
        spec = importlib.import_module("kvmsim._spec")
        with open(os.path.join(HERE, "kvmsim", "_spec.pxd.in")) as f:
            text = spec.render_pxd(f.read())
    finally:
        for name in [m for m in sys.modules if m == "kvmsim" or m.startswith("kvmsim.")]:
            del sys.modules[name]
        if saved is not None:
            sys.modules["kvmsim"] = saved
    target = os.path.join(HERE, "kvmsim", "_spec.pxd")
    if not os.path.exists(target) or open(target).read() != text:
        with open(target, "w") as f:
            f.write(text)


generate_spec_pxd()

debug = os.environ.get("KVMSIM_DEBUG") == "1"


def left_by_debug_build() -> bool:
    """Whether kvmsim/_core.c was generated for a debug build: Cython records the compile
    flags at its top. Its checks stay in the C file (and the sanitizers in the module, which
    is newer than the .pyx) until it is generated again, so a release build must regenerate it."""
    try:
        with open(os.path.join(HERE, "kvmsim", "_core.c")) as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return "-fsanitize" in head.split("END: Cython Metadata")[0]


sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
# numpy ships its random distributions (the ziggurat exponential) as a static library.
npyrandom = os.path.join(os.path.dirname(np.get_include()), "..", "random", "lib")

core = Extension(
    "kvmsim._core",
    ["kvmsim/_core.pyx"],
    include_dirs=[np.get_include()],
    library_dirs=[npyrandom],
    libraries=["npyrandom", "m"],
    extra_compile_args=(["-O1", "-g"] + sanitize) if debug else ["-O3"],
    extra_link_args=sanitize if debug else [],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(ext_modules=cythonize(
    [core], language_level=3, force=debug or left_by_debug_build(),
    compiler_directives={"boundscheck": debug, "wraparound": False, "cdivision": True,
                         "initializedcheck": debug}))
