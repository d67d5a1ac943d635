"""The names users give counters and trace events, resolved in one place.

A counter answers to its kvmsim name (`canceled_vmenters`, `requests.NMI`), its perf name
(`probe:vmx_cancel_injection`, `kvm:kvm_exit`, `kvmsim:nmis_dropped`) and, where it counts a
tracepoint, the tracepoint's name (`vmx_cancel_injection`, `kvm_exit`). Result.totals,
`stat -e`, `trace --events` and Result.plot all take any of them.
"""

from __future__ import annotations

from . import _spec, catalogue
from ._spec import TRACEPOINTS, TraceEvent

_COUNTERS = {c.name: c for c in _spec.COUNTERS}
_BY_ALIAS: dict[str, str] = {}
for _c in _spec.COUNTERS:
    _BY_ALIAS[_c.perf] = _c.name
    _BY_ALIAS[_c.perf.split(":", 1)[1]] = _c.name
for _tp, _counter in TRACEPOINTS.values():
    if _counter:
        _BY_ALIAS[_tp] = _counter
_TRACE_BY_NAME = {tp: ev for ev, (tp, _) in TRACEPOINTS.items()}
_TRACE_BY_COUNTER = {c: ev for ev, (_, c) in TRACEPOINTS.items() if c}


def counter(name: str) -> str:
    """The kvmsim counter a user's name means; KeyError with what is allowed."""
    name = name.strip()
    bare = name.removeprefix("kvmsim:")
    if bare in _COUNTERS:
        return bare
    if name in _BY_ALIAS:
        return _BY_ALIAS[name]
    group, _, request = bare.rpartition(".")
    if group in _spec.BIT_GROUPS and request in catalogue.BY_NAME:
        return f"{group}.{catalogue.canonical(request)}"
    if group in _spec.BIT_GROUPS and request in catalogue.NOT_CHECKED:
        return f"{group}.{request}"
    raise KeyError(f"unknown counter {name!r}; allowed: {', '.join(perf_names())}, or "
                   f"{'/'.join(_spec.BIT_GROUPS)}.<REQUEST> (`kvmsim stat --list-events`)")


def canonical(name: str) -> str:
    """counter(name), or the name as given (stripped) when it is no counter's name: for
    callers that report unknown names themselves."""
    try:
        return counter(name)
    except KeyError:
        return name.strip()


def for_order(check_order) -> tuple[str, ...]:
    """Every counter of a run with this check order: events, ns.<phase>, and per request of
    the order requests.<NAME>, cancels.async.<NAME>, cancels.backedge.<NAME>."""
    per_request = tuple(f"{g}.{n}" for g in _spec.BIT_GROUPS for n in check_order)
    return tuple(c.name for c in _spec.COUNTERS) + per_request


def perf_name(counter_name: str) -> str:
    """How perf-style output prints a counter."""
    c = _COUNTERS.get(counter_name)
    return c.perf if c else f"kvmsim:{counter_name}"


def perf_names() -> list[str]:
    return [c.perf for c in _spec.COUNTERS]


def trace_event(name: str) -> TraceEvent:
    """The TraceEvent a user's name means: its tracepoint name (kvm_exit, kvm:kvm_exit) or the
    counter it counts (vmexits, probe:vmx_cancel_injection); KeyError with what is allowed."""
    bare = name.strip().split(":", 1)[-1]
    if bare in _TRACE_BY_NAME:
        return _TRACE_BY_NAME[bare]
    try:
        return _TRACE_BY_COUNTER[counter(name)]
    except KeyError:
        raise KeyError(f"unknown trace event {name!r}; allowed: "
                       f"{', '.join(tp for tp, _ in TRACEPOINTS.values())}") from None


def listing() -> list[str]:
    """`kvmsim stat --list-events`, one line per counter as `perf list` prints events."""
    lines = [f"  {c.perf:<34} {c.help}" + (f" [{c.unit}]" if c.unit else "")
             for c in _spec.COUNTERS]
    lines += [f"  kvmsim:{g}.<REQUEST>{'':<{19 - len(g)}} {h.format('<REQUEST>')}"
              for g, h in _spec.BIT_GROUPS.items()]
    return lines
