import os

import pytest
from hypothesis import settings

import kvmsim

ENGINES = ("cython", "python")

# The fuzzer's profiles (tests/test_fuzz.py): bounded and deterministic for CI, or long.
settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None,
                          print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, print_blob=True)


def pytest_addoption(parser):
    parser.addoption("--fuzz", choices=("ci", "long"), default=os.environ.get("KVMSIM_FUZZ", "ci"),
                     help="hypothesis profile of tests/test_fuzz.py (default ci; env KVMSIM_FUZZ)")


def pytest_configure(config):
    settings.load_profile(config.getoption("--fuzz"))


@pytest.fixture(params=ENGINES)
def engine(request):
    """Every behaviour test runs against both engines."""
    return request.param


@pytest.fixture
def sim(engine):
    """sim(workload, order=..., duration=..., **config) -> Result, on this test's engine."""
    def run(workload, order="linux-6.7", duration=0.02, interval=None, **cfg):
        config = kvmsim.Config(order=order, workload=workload, engine=engine, **cfg)
        return kvmsim.simulate(config, duration=duration, interval=interval)
    return run
