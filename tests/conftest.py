import pytest

import kvmsim

ENGINES = ("cython", "python")


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
