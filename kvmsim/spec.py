"""The model's vocabulary for code that embeds kvmsim: counters and their columns, trace
events and exit reasons, source kinds, vCPU modes, stop codes and the C API's version.

These are the objects both engines read, declared once in kvmsim/_spec.py. C and Cython code
gets the same values from the generated `_spec.pxd` (`cimport kvmsim._spec`, next to
`cimport kvmsim._core`; docs/embedding.md).
"""

from ._spec import (ABI_VERSION, BIT_GROUPS, COLUMN, COSTS, COUNTERS, EVENTS, IPI_ALL, IPI_ANY,
                    KINDS, N_COLUMNS, NEVER, PHASES, STATE_FIELDS, TRACEPOINTS, Cost, Counter,
                    ExitReason, GuestPmu, Kind, Lvtpc, Mode, Src, Stop, TraceEvent, column,
                    column_name)

__all__ = ["ABI_VERSION", "BIT_GROUPS", "COLUMN", "COSTS", "COUNTERS", "EVENTS", "IPI_ALL",
           "IPI_ANY", "KINDS", "N_COLUMNS", "NEVER", "PHASES", "STATE_FIELDS", "TRACEPOINTS",
           "Cost", "Counter", "ExitReason", "GuestPmu", "Kind", "Lvtpc", "Mode", "Src", "Stop",
           "TraceEvent", "column", "column_name"]
