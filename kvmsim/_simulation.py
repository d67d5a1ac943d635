"""Running a Config: Simulation (SimPy-style `now` and `run(until=...)`) and simulate().

Below this module everything is integer nanoseconds; seconds exist only at its edge. The
engine fills a small window of intervals; each interval that every vCPU has passed is
complete and final, so it is handed to the caller (`on_intervals`) and folded into the
totals, and only the counters the caller keeps are stored per interval.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from . import _engine, _names, _spec, catalogue
from ._config import Config
from ._errors import ConfigError
from ._limits import MAX_COUNTS_BYTES, NS, to_ns
from ._plan import build
from ._result import Result
from ._spec import Src, Stop
from ._workload import raised_by

# Slices of simulated time are sized to take about this long (seconds of wall time), so
# intervals stream out and the progress bar moves; Ctrl-C is seen inside a slice.
SLICE_SECONDS = (0.02, 0.1)
WINDOW_BYTES = 64 << 20       # the engine's window of intervals in flight, at most
INJECTABLE = {"nmi": Src.NMI, "irq": Src.IRQ, "pmi": Src.PMI}


@dataclass(frozen=True)
class Intervals:
    """Complete intervals as they stream out of a run: a view, valid during the callback."""
    first: int                # index of counts[:, 0]
    interval_ns: int
    counts: np.ndarray        # int64[vcpus, n, _spec.N_COLUMNS]

    @property
    def ends_ns(self) -> np.ndarray:
        return (np.arange(self.first, self.first + self.counts.shape[1]) + 1) * self.interval_ns


def _config(config) -> Config:
    if not isinstance(config, Config):
        raise ConfigError([("config", f"expected a kvmsim.Config (got {config!r})")])
    return config


def _ns(field: str, seconds) -> int:
    try:
        return to_ns(seconds)
    except ValueError as e:
        raise ConfigError([(field, str(e))]) from None


def _keep_columns(keep) -> tuple[int, ...]:
    if keep is None:
        return tuple(range(_spec.N_COLUMNS))
    if isinstance(keep, str):
        keep = [keep]
    columns, problems = [], []
    for name in keep:
        try:
            columns.append(_spec.column(_names.counter(name)))
        except (KeyError, TypeError, AttributeError):
            problems.append(("keep", f"unknown counter {name!r}; allowed: the names of "
                                     "`kvmsim stat --list-events`"))
    if problems:
        raise ConfigError(problems)
    return tuple(dict.fromkeys(columns))


class Simulation:
    """A VM under one Config; `run(until=t)` advances simulated time to t seconds.

    `keep` names the counters stored per interval and vCPU (default: all); totals per vCPU
    are always kept. Ctrl-C during run() raises KeyboardInterrupt with every vCPU stopped at
    a consistent point; `now` is then the time all of them have reached. `running` says
    whether a run() is in progress (a callback of that run sees True).
    """

    def __init__(self, config: Config, interval: float = 1.0, *,
                 keep: Iterable[str] | None = None):
        self.config = _config(config)
        self.interval_ns = _ns("interval", interval)
        self.columns = _keep_columns(keep)
        self.plan = build(self.config, self.interval_ns)
        self.engine = _engine.create(self.plan, self.config.engine,
                                     self.config.threads or os.cpu_count() or 1)
        n = self.plan.vcpus
        self._window = np.zeros((n, 1, _spec.N_COLUMNS), dtype=np.int64)
        self._first = 0                       # the interval _window[:, 0] holds
        self._totals = np.zeros((n, _spec.N_COLUMNS), dtype=np.int64)
        self._kept = np.zeros((n, 0, len(self.columns)), dtype=np.int64)
        self._now = np.zeros(n, dtype=np.int64)   # per vCPU: how far each has run
        self._slice_ns = 1_000_000
        self._lock = threading.RLock()     # a callback may post during a run
        self._runner: int | None = None

    @property
    def interval(self) -> float:
        return self.interval_ns / NS

    @property
    def now_ns(self) -> int:
        """Simulated nanoseconds every vCPU has reached."""
        return int(self._now.min())

    @property
    def now(self) -> float:
        """Simulated seconds every vCPU has reached."""
        return self.now_ns / NS

    @property
    def running(self) -> bool:
        """Whether a run() is in progress, in this thread (an on_event, on_intervals or
        on_slice callback of the run) or another."""
        return self._runner is not None

    def run(self, until: float, on_intervals: Callable[[Intervals], None] | None = None,
            on_slice: Callable[[float], None] | None = None) -> None:
        """Advance to `until` seconds. on_intervals(Intervals) gets each batch of complete
        intervals as soon as every vCPU has passed them; on_slice(now) is called after each
        slice of the run."""
        until_ns = _ns("until", until)
        if until_ns <= self.now_ns:
            raise ConfigError([("until", f"{until!r} s is not at least 1 ns after now = "
                                         f"{self.now!r} s")])
        with self._lock:
            if self._runner == threading.get_ident():
                raise RuntimeError("run() called from inside a callback of this Simulation's "
                                   "run: post with inject/make_request, and run again after "
                                   "it returns")
            if self._runner is not None:
                raise RuntimeError("this Simulation is already running in another thread")
            self._runner = threading.get_ident()
        stop_event = threading.Event()
        restore = _catch_sigint(stop_event)
        try:
            self._reserve(until_ns)
            while self.now_ns < until_ns:
                stop = self._slice(until_ns, stop_event, on_intervals)
                if stop == Stop.INTERRUPTED or stop_event.is_set():
                    raise KeyboardInterrupt
                if stop == Stop.UNCONSUMABLE:
                    raise RuntimeError(self._unconsumable())
                if on_slice:
                    on_slice(self.now)
        finally:
            restore()
            self._runner = None

    def _slice(self, until_ns, stop_event, on_intervals) -> Stop:
        ivl, first = self.interval_ns, self._first
        end = min(until_ns, self.now_ns + self._slice_ns,
                  (first + self._window.shape[1]) * ivl)
        start = time.perf_counter()
        with self._lock:
            stop = Stop(self.engine.run(end, self._window, first, stop_event))
            if stop == Stop.DONE:
                np.maximum(self._now, end, out=self._now)
            else:
                self._now[:] = [self.engine.state(v)["now"] for v in range(self.plan.vcpus)]
        took = time.perf_counter() - start
        if took < SLICE_SECONDS[0]:
            self._slice_ns *= 2
        elif took > SLICE_SECONDS[1] and self._slice_ns > 1:
            self._slice_ns //= 2
        # intervals every vCPU has passed (and no suspended pass of a coupled run still
        # counts into)
        final = self.now_ns
        if self.plan.params["coupled"]:
            final = min(final, *(self.engine.state(v)["pass_since"]
                                 for v in range(self.plan.vcpus)))
        done = final // ivl - first
        if done > 0:
            block = self._window[:, :done]
            self._totals += block.sum(axis=1)
            self._kept[:, first:first + done] = block[:, :, list(self.columns)]
            if on_intervals:
                on_intervals(Intervals(first, ivl, block))
            used = -(-int(self._now.max()) // ivl) - first   # intervals written so far
            self._window[:, :used - done] = self._window[:, done:used]
            self._window[:, used - done:used] = 0
            self._first += done
        return stop

    def _reserve(self, until_ns: int) -> None:
        """Room for the kept counters of every interval up to until_ns, bounded, exact; and
        a window for the intervals in flight, as wide as this run needs up to WINDOW_BYTES."""
        n = -(-until_ns // self.interval_ns)
        vcpus, have = self.plan.vcpus, self._window.shape[1]
        if n <= self._kept.shape[1] and n - self._first <= have:
            return                               # room already
        wide = max(1, min(n - self._first, WINDOW_BYTES // (vcpus * _spec.N_COLUMNS * 8)))
        if wide > have:
            window = np.zeros((vcpus, wide, _spec.N_COLUMNS), dtype=np.int64)
            window[:, :have] = self._window
            self._window = window
        size = self.plan.vcpus * n * len(self.columns) * 8
        if size > MAX_COUNTS_BYTES:
            raise ConfigError([("interval", f"{self.interval:g} s gives {n:,} intervals x "
                                f"{self.plan.vcpus} vCPUs x {len(self.columns)} counters: "
                                f"{size / 2**30:.1f} GiB of counts; at most "
                                f"{MAX_COUNTS_BYTES / 2**30:g} GiB: keep fewer counters "
                                "(Simulation(keep=...)) or use a longer interval")])
        if n > self._kept.shape[1]:
            kept = np.zeros((self.plan.vcpus, n, len(self.columns)), dtype=np.int64)
            kept[:, :self._kept.shape[1]] = self._kept
            self._kept = kept

    def _unconsumable(self) -> str:
        pending = 0
        for v in range(self.plan.vcpus):
            pending |= self.engine.state(v)["requests"] & self.plan.params["unconsumable"]
        names = [catalogue.name_of(b) for b in range(_spec.N_BITS) if pending >> b & 1]
        return (f"{', '.join(names)} pending, but the order never checks it: every VM-Enter "
                "would be cancelled without end (vcpu_enter_guest() never clears it)")

    def partial(self) -> Intervals | None:
        """The intervals in progress (counts so far) when every vCPU stands at `now`: the
        one `now` is inside, and in a coupled VM those a pass in progress began in; None
        when there are none, or after an interrupted run."""
        if self._now.min() != self._now.max():
            return None
        k = -(-self.now_ns // self.interval_ns) - self._first
        return Intervals(self._first, self.interval_ns, self._window[:, :k]) if k > 0 else None

    def make_request(self, vcpu: int, request: str, kick: bool = True) -> bool:
        """Post KVM_REQ_<request> to a vCPU from "another CPU" at `now` (kvm_make_request),
        and kick it (kvm_vcpu_kick): a vCPU in guest mode exits at once and services it.
        Returns whether a kick was sent (only to a vCPU in guest mode)."""
        problems = self._check_target(vcpu, kick)
        if request not in catalogue.BY_NAME:
            problems.append(("request", f"{request!r}; allowed: a request the order checks: "
                                        f"{', '.join(self.config.check_order)}"))
        elif missing := self.config.unchecked({catalogue.canonical(request)}):
            problems.append(("request", f"{request!r} would leave "
                                        f"{', '.join(missing)} pending, which the order never "
                                        "checks: every VM-Enter would be cancelled"))
        if problems:
            raise ConfigError(problems)
        with self._lock:
            return bool(self.engine.make_request(vcpu, catalogue.bit_of(request), kick))

    def inject(self, vcpu: int, kind: str, count: int = 1) -> bool:
        """From another CPU at `now`: `count` NMIs (kvm_inject_nmi) or fixed IRQs
        (kvm_apic_set_irq), or guest counter overflows (kvm_perf_overflow) for kind "pmi";
        with the kick each comes with. Returns whether a kick was sent."""
        problems = self._check_target(vcpu, True)
        if kind not in INJECTABLE:
            problems.append(("kind", f"{kind!r}; allowed: {', '.join(INJECTABLE)}"))
        elif missing := self.config.unchecked(raised_by(kind)):
            problems.append(("kind", f"{kind!r} raises {', '.join(missing)}, which the order "
                                     "never checks"))
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 2**32:
            problems.append(("count", f"{count!r}; allowed: an int in 1..{2**32}"))
        if problems:
            raise ConfigError(problems)
        with self._lock:
            return bool(self.engine.inject(vcpu, INJECTABLE[kind], count))

    def state(self, vcpu: int) -> dict[str, int]:
        """vCPU state as the kernel names it: requests, mode, nmi_pending, ... (ints)."""
        problems = self._check_target(vcpu, True)
        if problems:
            raise ConfigError(problems)
        with self._lock:
            return self.engine.state(vcpu)

    def next_event(self, vcpu: int | None = None) -> float:
        """When a vCPU (or the first of them) next does something of its own: an exit, a pass,
        a wake-up (seconds, >= its now; math.inf when nothing is due). run(until=) past it to
        see it happen: an event-driven driver waits until then, or until it posts."""
        problems = [] if vcpu is None else self._check_target(vcpu, True)
        if problems:
            raise ConfigError(problems)
        with self._lock:
            t = min(self.engine.next_event(v) for v in
                    (range(self.plan.vcpus) if vcpu is None else (vcpu,)))
        return math.inf if t == _spec.NEVER else t / NS

    def on_event(self, callback: Callable[[float, int, str, int, int], None] | None,
                 events: Iterable[str] | None = None) -> None:
        """Call callback(t, vcpu, event, a, b) as the run simulates each event (t in seconds;
        event a tracepoint name: kvm_exit, kvm_entry, vmx_cancel_injection, kvm_inj_nmi,
        kvm_inj_virq, process_nmi, kvm_check_request, kvm_make_request, kvm_vcpu_block; a and
        b as `kvmsim trace` prints them). `events` picks some (one name or several); None: all. callback=None stops.
        The callback may call make_request(), inject() and state(). With no callback the run
        pays nothing for this."""
        if callback is None:
            with self._lock:
                self.engine.set_trace(None)
            return
        if not callable(callback):
            raise ConfigError([("callback", f"{callback!r}; allowed: a callable or None")])
        names = {name: e for e, (name, _) in _spec.TRACEPOINTS.items()}
        if isinstance(events, str):
            events = [events]                 # one event name, not its letters
        try:
            wanted = set(names) if events is None else set(events)
        except TypeError:
            raise ConfigError([("events", f"{events!r}; allowed: an event name, an "
                                          "iterable of them, or None")]) from None
        if unknown := sorted(wanted - set(names)):
            raise ConfigError([("events", f"unknown event {', '.join(map(repr, unknown))}; "
                                          f"allowed: {', '.join(names)}")])
        codes = {names[n]: n for n in wanted}

        def hook(t_ns, vcpu, event, a, b):
            if event in codes:
                callback(t_ns / NS, vcpu, codes[event], a, b)
        with self._lock:
            self.engine.set_trace(hook)

    def _check_target(self, vcpu, kick) -> list[tuple[str, str]]:
        problems = []
        if isinstance(vcpu, bool) or not isinstance(vcpu, int) or \
                not 0 <= vcpu < self.plan.vcpus:
            problems.append(("vcpu", f"{vcpu!r}; allowed: 0..{self.plan.vcpus - 1}"))
        if not isinstance(kick, bool):
            problems.append(("kick", f"{kick!r}; allowed: True or False"))
        return problems

    def result(self) -> Result:
        """The counts so far: complete intervals, and the one in progress when every vCPU
        stands at `now` inside it."""
        with self._lock:
            partial = self.partial()
            k = 0 if partial is None else partial.counts.shape[1]
            n = self._first + k
            totals = self._totals.copy()
            kept = self._kept[:, :n]
            if partial is not None:
                totals += partial.counts.sum(axis=1)
                kept = kept.copy()
                kept[:, n - k:] = partial.counts[:, :, list(self.columns)]
            kept.flags.writeable = False
            duration = self.now_ns if partial is not None or \
                self._now.min() == self._now.max() else self._first * self.interval_ns
            states = [self.engine.state(v) for v in range(self.plan.vcpus)]
        outstanding = np.array([s["nmi_queued"] + s["nmi_pending"] + s["nmi_injected"]
                                + s["vnmi_pending"]
                                for s in states], dtype=np.int64)
        return Result(self.config, self.interval_ns, duration, self.columns, kept, totals,
                      outstanding)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        state["_runner"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()     # a callback may post during a run


def _catch_sigint(stop_event: threading.Event) -> Callable[[], None]:
    """While a run lasts in the main thread, Ctrl-C asks the engine to stop at its next
    consistent point instead of raising in the middle of a step."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None
    signal.signal(signal.SIGINT, lambda *_: stop_event.set())
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


def simulate(config: Config, duration: float = 10.0, interval: float | None = None, *,
             keep: Iterable[str] | None = None) -> Result:
    """Simulate `duration` seconds; counts per `interval` seconds (default: one interval)."""
    config = _config(config)
    problems = []
    for field, value in (("duration", duration), ("interval", interval)):
        if value is not None:
            try:
                to_ns(value)
            except ValueError as e:
                problems.append((field, str(e)))
    if problems:
        raise ConfigError(problems)
    sim = Simulation(config, interval=duration if interval is None else interval, keep=keep)
    sim.run(until=duration)
    return sim.result()
