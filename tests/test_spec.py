"""The one spec: the generated Cython declarations match it, and the engines read it."""

import pathlib

import kvmsim
from kvmsim import _spec
from kvmsim._plan import build

PACKAGE = pathlib.Path(kvmsim.__file__).parent


def test_built_spec_pxd_is_current():
    # setup.py renders _spec.pxd from _spec.pxd.in; an engine built from a stale one would
    # read other codes than the reference engine.
    template = (PACKAGE / "_spec.pxd.in").read_text()
    assert (PACKAGE / "_spec.pxd").read_text() == _spec.render_pxd(template), \
        "kvmsim/_spec.pxd is stale: rebuild (pip install -e .)"


def test_plan_fills_exactly_the_parameter_block():
    plan = build(kvmsim.Config(), 10**9)
    assert list(plan.params) == [p.name for p in _spec.PARAMS]


def test_every_column_has_one_name_and_names_round_trip():
    names = [_spec.column_name(i) for i in range(_spec.N_COLUMNS)]
    assert len(set(names)) == _spec.N_COLUMNS
    for i, name in enumerate(names):
        if ".bit" not in name:
            assert _spec.column(name) == i


def test_costs_come_from_the_spec():
    assert [f for f in kvmsim.Costs.model_fields if f != "handlers"] == \
        [c.name for c in _spec.COSTS]
    assert kvmsim.Costs().vmexit == next(c.default_ns for c in _spec.COSTS if c.name == "vmexit")


def test_every_source_code_is_declared_as_a_kind():
    # A kind's name, side, requests and help are one record; the Workload reads them there.
    assert {k.src for k in _spec.KINDS} == set(_spec.Src)
    assert len({k.name for k in _spec.KINDS}) == len(_spec.KINDS)
    for k in _spec.KINDS:
        assert k.allowed in _spec.KIND_HELP
        assert k.raises is None or all(r in _spec.catalogue.BY_NAME for r in k.raises)
