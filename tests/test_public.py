"""The public surface: every public class documents itself in its source, and every
`kvmsim.X` the README and docs name exists."""

import ast
import importlib
import inspect
import pathlib
import pkgutil
import re
import textwrap

import pytest

import kvmsim

ROOT = pathlib.Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# kvmsim.a.b, not inside a string ("kvmsim.ks_api" is a capsule's name) or a longer name.
DOTTED = re.compile(r"""(?<![\w."'/])kvmsim(?:\.[A-Za-z_]\w*)+""")


def _optional_missing(e: ModuleNotFoundError) -> bool:
    """An optional dependency (simpy, ...) is not installed: not kvmsim's own module."""
    return not (e.name or "").startswith("kvmsim")


def public_modules() -> list[str]:
    """kvmsim and every module under it with no `_` in its dotted path."""
    names = ["kvmsim"] + [m.name for m in pkgutil.walk_packages(kvmsim.__path__, "kvmsim.")
                          if not any(p.startswith("_") for p in m.name.split("."))]
    return names


def test_the_public_modules_are_the_documented_ones():
    assert {"kvmsim.analysis", "kvmsim.catalogue", "kvmsim.graph", "kvmsim.profiles",
            "kvmsim.simpy", "kvmsim.spec", "kvmsim.host", "kvmsim.host.cases",
            "kvmsim.host.calibrate"} <= set(public_modules())


def _docstring_in_source(cls: type) -> bool:
    """The class statement's body starts with a string. A class made by a factory (Costs:
    pydantic.create_model) has no statement: its __doc__ must be given, not generated (a
    dataclass makes one from its signature)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        doc = cls.__doc__ or ""
        return bool(doc.strip()) and not doc.startswith(f"{cls.__name__}(")
    node = ast.parse(textwrap.dedent(source)).body[0]
    return isinstance(node, ast.ClassDef) and ast.get_docstring(node) is not None


@pytest.mark.parametrize("name", public_modules())
def test_every_public_class_has_a_docstring(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if _optional_missing(e):
            pytest.skip(f"{name} needs {e.name}")
        raise
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    classes = {n: getattr(module, n) for n in names}
    classes = {n: c for n, c in classes.items()
               if inspect.isclass(c) and c.__module__.startswith("kvmsim")}
    undocumented = sorted(n for n, c in classes.items() if not _docstring_in_source(c))
    assert not undocumented, f"{name}: public classes without a docstring: {undocumented}"


def _resolve(dotted: str):
    """The object a dotted name names: attributes, importing submodules on the way."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[:i]))
    return obj


def _named_in_docs() -> dict[str, list[str]]:
    """kvmsim.X -> where the README and docs name it (file:line)."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            for m in DOTTED.finditer(line):
                found.setdefault(m[0], []).append(f"{path.name}:{n}")
    return found


def test_docs_name_kvmsim_things():
    assert {"kvmsim.Config", "kvmsim.simpy.VM", "kvmsim.spec.COLUMN",
            "kvmsim.SweepInterrupted", "kvmsim.analysis.order_from_source"} <= set(_named_in_docs())


@pytest.mark.parametrize("dotted,where", sorted(_named_in_docs().items()))
def test_every_kvmsim_name_in_the_docs_resolves(dotted, where):
    try:
        _resolve(dotted)
    except ModuleNotFoundError as e:
        if _optional_missing(e):
            pytest.skip(f"{dotted} needs {e.name}")
        pytest.fail(f"{dotted} ({', '.join(where)}): no module {e.name}")
    except ImportError as e:
        pytest.fail(f"{dotted} ({', '.join(where)}): {e}")


# The `_` names the docs may use: the C API's .pxd files, which Cython code cimports
# (docs/embedding.md), and the maintainers' `python -m` that reassembles the guest image.
PRIVATE_ALLOWED = {"kvmsim._core", "kvmsim._spec", "kvmsim.host._guest"}


def test_docs_name_no_private_module_but_the_c_api():
    private = {d: w for d, w in _named_in_docs().items()
               if any(p.startswith("_") for p in d.split(".")) and d not in PRIVATE_ALLOWED}
    assert not private, f"docs name private modules (use the public name): {private}"


def test_the_installed_version_is_the_packages():
    # pyproject reads it from kvmsim/_version.py: one place, which sweep workers compare
    from importlib.metadata import version
    assert version("kvmsim") == kvmsim.__version__
