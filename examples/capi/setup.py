"""Builds the C-API example against the installed kvmsim (its .pxd ships in the package)."""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize([Extension("kick", ["kick.pyx"], include_dirs=[np.get_include()])],
                            language_level=3))
