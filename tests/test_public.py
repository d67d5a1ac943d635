"""The public surface: every public class documents itself in its source."""

import ast
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import kvmsim


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
            "kvmsim.simpy", "kvmsim.host", "kvmsim.host.cases",
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
