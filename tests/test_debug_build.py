"""KVMSIM_DEBUG=1 builds the engine for hunting memory errors (setup.py): Cython's bounds and
initialisation checks, -O1 -g, AddressSanitizer and UBSan.

setup.py is read with its build steps stubbed out (cheap: nothing is compiled). `.ci/run`
builds the debug engine and runs the fast part of the suite on it with KVMSIM_DEBUG=1 set;
then test_the_debug_build_is_instrumented checks the engine that suite imported.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
SANITIZE = "-fsanitize=address,undefined"

# Runs setup.py with cythonize and setup() recording what they are asked for.
SHIM = """
import json, runpy, sys
import setuptools, Cython.Build
seen = {}
def cythonize(modules, **kw):
    seen.update(directives=kw.get("compiler_directives", {}), force=bool(kw.get("force")),
                compile=[a for m in modules for a in m.extra_compile_args],
                link=[a for m in modules for a in m.extra_link_args])
    return modules
Cython.Build.cythonize = cythonize
setuptools.setup = lambda **kw: None
sys.argv = ["setup.py"]
runpy.run_path("setup.py", run_name="__main__")
print(json.dumps(seen))
"""


def asked_for(tmp_path, debug: bool, c_file: str | None = None) -> dict:
    """What setup.py asks Cython and the compiler for, in a copy of the tree's sources."""
    tree = tmp_path / ("debug" if debug else "release")
    tree.mkdir(parents=True)
    shutil.copy(ROOT / "setup.py", tree)
    shutil.copytree(ROOT / "kvmsim", tree / "kvmsim", ignore=shutil.ignore_patterns(
        "*.so", "*.c", "*.html", "__pycache__", "_spec.pxd"))
    if c_file is not None:
        (tree / "kvmsim" / "_core.c").write_text(c_file)
    env = {k: v for k, v in os.environ.items() if k != "KVMSIM_DEBUG"}
    if debug:
        env["KVMSIM_DEBUG"] = "1"
    p = subprocess.run([sys.executable, "-c", SHIM], cwd=tree, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def test_kvmsim_debug_asks_for_checks_and_sanitizers(tmp_path):
    debug = asked_for(tmp_path, debug=True)
    assert debug["directives"]["boundscheck"] is True
    assert debug["directives"]["initializedcheck"] is True
    assert debug["force"] is True                  # the C file is generated again
    assert SANITIZE in debug["compile"] and SANITIZE in debug["link"]
    assert "-g" in debug["compile"] and "-O3" not in debug["compile"]
    release = asked_for(tmp_path, debug=False)
    assert release["directives"]["boundscheck"] is False
    assert release["directives"]["initializedcheck"] is False
    assert release["force"] is False
    assert not any("sanitize" in a for a in release["compile"] + release["link"])
    assert "-O3" in release["compile"]


def test_a_release_build_regenerates_what_a_debug_build_left(tmp_path):
    # Without this, building again without KVMSIM_DEBUG kept the debug C file and module:
    # both were newer than the .pyx.
    left = '/* BEGIN: Cython Metadata\n{"distutils": {"extra_compile_args": ["-O1", "-g", ' \
           f'"{SANITIZE}"]}}}}\nEND: Cython Metadata */\n'
    assert asked_for(tmp_path, debug=False, c_file=left)["force"] is True
    release = left.replace(f', "{SANITIZE}"', "").replace('"-O1", "-g"', '"-O3"')
    assert asked_for(tmp_path / "again", debug=False, c_file=release)["force"] is False


@pytest.mark.skipif(os.environ.get("KVMSIM_DEBUG") != "1",
                    reason="checks a debug build: set KVMSIM_DEBUG=1 (as .ci/run does)")
def test_the_debug_build_is_instrumented():
    from kvmsim import _core
    module = pathlib.Path(_core.__file__)
    binary = module.read_bytes()
    # linked against the sanitizers' runtimes (ldd lists libasan and libubsan)
    assert b"__asan_init" in binary and b"__ubsan_handle_" in binary, module
    c_file = module.with_name("_core.c").read_text()
    metadata = c_file.split("END: Cython Metadata")[0]
    assert SANITIZE in metadata and '"-O1"' in metadata
    # Cython's bounds checks: a release build has no call to this
    assert c_file.count("__Pyx_RaiseBufferIndexError(") >= 2
