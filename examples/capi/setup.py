"""Builds the C-API examples against the installed kvmsim (its .pxd files ship in the package).

    python setup.py build_ext --inplace
"""
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

import kvmsim

setup(ext_modules=cythonize([Extension(name, [f"{name}.pyx"], include_dirs=[np.get_include()])
                             for name in ("kick", "vm_driver")],
                            include_path=[kvmsim.get_include()], language_level=3))
