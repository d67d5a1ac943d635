"""kvmsim: a simulator of KVM x86's VM-Enter path (vcpu_enter_guest)."""

from .config import Config
from .costs import Costs
from .errors import ConfigError
from .result import Result
from .scenario import Scenario
from .simulation import Simulation, simulate
from .workload import Periodic, Poisson, Trace, Workload

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "Costs", "Periodic", "Poisson", "Result", "Scenario",
           "Simulation", "Trace", "Workload", "simulate", "sweep"]

from ._sweep import sweep  # noqa: E402  (uses the names above)
