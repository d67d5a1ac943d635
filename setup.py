"""Builds the Cython engine; everything else is in pyproject.toml."""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# numpy ships its random distributions (the ziggurat exponential) as a static library.
npyrandom = os.path.join(os.path.dirname(np.get_include()), "..", "random", "lib")

core = Extension(
    "kvmsim._core",
    ["kvmsim/_core.pyx"],
    include_dirs=[np.get_include()],
    library_dirs=[npyrandom],
    libraries=["npyrandom", "m"],
    extra_compile_args=["-O3"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(ext_modules=cythonize([core], language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False,
                                                 "cdivision": True, "initializedcheck": False}))
