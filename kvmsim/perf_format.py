"""Output in perf's formats: `perf stat -I` lines as tools/perf/util/stat-display.c prints them."""

from __future__ import annotations

from .counters import EVENTS, PHASES

# kvmsim counters under the names perf users know; the rest are kvmsim:<counter>.
PERF_NAMES = {
    "canceled_vmenters": "probe:vmx_cancel_injection",
    "vmexits": "kvm:kvm_exit",
    "vmenters": "kvm:kvm_entry",
    "irqs_injected": "kvm:kvm_inj_virq",
}
UNITS = {f"ns.{p}": "ns" for p in PHASES}

INTERVAL_HEADER = "#           time             counts unit events"


def event_name(counter: str) -> str:
    return PERF_NAMES.get(counter, f"kvmsim:{counter}")


def counter_names() -> tuple[str, ...]:
    """Counters that `-e` accepts (request counts as requests.<NAME>)."""
    return EVENTS + tuple(f"ns.{p}" for p in PHASES)


def resolve_events(spec: str, allowed: tuple[str, ...]) -> list[str]:
    """`-e a,b,c` (perf names or kvmsim counter names) -> kvmsim counter names."""
    by_name = {event_name(c): c for c in allowed} | {c: c for c in allowed}
    wanted = [e.strip() for e in spec.split(",") if e.strip()]
    bad = [e for e in wanted if e not in by_name]
    if bad or not wanted:
        raise ValueError(f"unknown event {', '.join(map(repr, bad)) or repr(spec)}; allowed: "
                         + ", ".join(event_name(c) for c in allowed))
    return [by_name[e] for e in wanted]


def timestamp(seconds_ns: int) -> str:
    """perf's `%6lu.%09lu` from integer nanoseconds."""
    return "%6lu.%09lu" % divmod(seconds_ns, 1_000_000_000)


def interval_line(t_ns: int, count: int, counter: str) -> str:
    """One `perf stat -I` line: time, count in 18 columns, unit in 4, event name (col. 42)."""
    return f"{timestamp(t_ns)} {count:>18} {UNITS.get(counter, ''):<4} {event_name(counter):<32}"
