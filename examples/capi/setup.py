"""Builds the C-API example against the installed kvmsim (its .pxd files ship in the package).

    python setup.py build_ext --inplace
"""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

import kvmsim

setup(ext_modules=cythonize([Extension("kick", ["kick.pyx"], include_dirs=[np.get_include()])],
                            include_path=[kvmsim.get_include()], language_level=3))
