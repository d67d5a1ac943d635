"""kvmsim: a simulator of KVM x86's VM-Enter path (vcpu_enter_guest)."""

import os

from . import profiles, spec
from ._config import Config, Host
from ._costs import Costs
from ._errors import ConfigError
from ._result import Counts, Result
from ._scenario import Scenario
from ._simulation import Intervals, Simulation, simulate
from ._sweep import SweepFailed, SweepInterrupted, sweep
from ._version import __version__
from ._workload import Periodic, Poisson, Trace, Workload

__all__ = ["Config", "ConfigError", "Costs", "Counts", "Host", "Intervals", "Periodic",
           "Poisson", "Result", "Scenario", "Simulation", "SweepFailed", "SweepInterrupted",
           "Trace", "Workload", "get_include", "profiles", "simulate", "spec", "sweep"]


def get_include() -> str:
    """The folder to put on Cython's include path to cimport kvmsim's .pxd files (also for
    an editable install, where the import system cannot find them)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
