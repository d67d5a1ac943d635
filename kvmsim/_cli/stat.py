"""kvmsim stat: count events as `perf stat -I` does, each interval printed as it completes."""

from __future__ import annotations

import math
import os
import sys
import time
from fractions import Fraction

import numpy as np

from .. import _names, _perf_format as pf
from .._errors import ConfigError
from .._result import sum_over_vcpus
from .._simulation import Simulation
from .._spec import column
from . import _args
from ._progress import Progress

HELP = "count events like `perf stat -I`"
EPILOG = """examples:
  kvmsim stat --order linux-6.6 --workload spec2017-vtune --duration 60 -I 10000
  kvmsim stat examples/spec2017-vtune.toml --order linux-6.7 -x, -o counts.csv
  kvmsim stat --workload anchor -e kvm:kvm_exit,kvmsim:nmis_dropped -A -j
  kvmsim stat --workload anchor --duration 1 -r 5      # mean and +- over 5 seeds
  kvmsim stat - < examples/spec2017-vtune.toml         # a scenario on standard input
"""
DEFAULT_EVENTS = "probe:vmx_cancel_injection"


def add(sub) -> None:
    p = sub.add_parser("stat", help=HELP, epilog=EPILOG, formatter_class=_args.Formatter)
    p.add_argument("scenario", nargs="?", help="a scenario file (TOML), - for standard input; "
                                               "flags override it")
    _args.add_run_flags(p, duration=60.0)
    p.add_argument("-e", "--event", dest="events", default=DEFAULT_EVENTS,
                   help="comma-separated events (default %(default)s); see --list-events")
    p.add_argument("-x", "--field-separator", dest="sep", metavar="SEP", type=_args.separator,
                   help="print CSV with this separator, as perf stat -x does")
    p.add_argument("-j", "--json", action="store_true", help="print JSON lines as perf does")
    p.add_argument("-o", "--output", metavar="FILE", help="write the counts to FILE")
    p.add_argument("-A", "--per-vcpu", action="store_true",
                   help="one count per vCPU (like perf stat -A, CPU<n> = vCPU n)")
    p.add_argument("-r", "--repeat", type=_args.integer(1, 10_000), metavar="N",
                   help="run N times, seeds SEED..SEED+N-1; print each event's mean and "
                        "+- (relative standard error), as perf stat -r does")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-events", action="store_true", help="list events and exit")
    p.set_defaults(func=run)


def check_output(path: str | None, flag: str, problems: list) -> None:
    """Whether FILE can be written, without creating or emptying it."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        problems.append((flag, f"cannot write {path}: no such directory"))
    elif os.path.isdir(path) or not os.access(path if os.path.exists(path) else folder,
                                              os.W_OK):
        problems.append((flag, f"cannot write {path}: not a writable file"))


class Printer:
    """perf's -I lines (or -x CSV, -j JSON) for the chosen events, per vCPU with -A."""

    def __init__(self, args, events, dest):
        self.args, self.events, self.dest = args, events, dest
        self.columns = [column(e) for e in events]

    def header(self) -> None:
        if not self.args.json and self.args.sep is None:
            print(pf.INTERVAL_HEADER_CPU if self.args.per_vcpu else pf.INTERVAL_HEADER,
                  file=self.dest)

    def rows(self, ends_ns, counts, interval_ns, run_ns=None) -> None:
        """counts: int64[vcpus, n, N_COLUMNS] for intervals ending at ends_ns; run_ns: each
        interval's length, the run time -x and -j print (default interval_ns each)."""
        a = self.args
        chosen = counts[:, :, self.columns]
        # Over the vCPUs in Python ints where int64 would overflow (ns.* of many vCPUs).
        summed = None if a.per_vcpu else sum_over_vcpus(chosen)
        for i, t_ns in enumerate(ends_ns):
            ran = interval_ns if run_ns is None else int(run_ns[i])
            for j, e in enumerate(self.events):
                cells = enumerate(chosen[:, i, j]) if a.per_vcpu else [(None, summed[i, j])]
                for v, n in cells:
                    n = int(n)
                    if a.json:
                        line = pf.json_line(int(t_ns), n, e, ran, vcpu=v)
                    elif a.sep is not None:
                        line = pf.csv_line(int(t_ns), n, e, ran, a.sep, vcpu=v)
                    else:
                        line = pf.interval_line(int(t_ns), n, e, vcpu=v)
                    print(line, file=self.dest)


def run(args, out) -> int:
    if args.list_events:
        print("\n".join(_names.listing()), file=out)
        return 0
    problems = []
    if args.json and args.sep is not None:
        problems.append(("-j", "cannot be combined with -x; pick one format"))
    if args.repeat is not None:
        if not 1 <= args.repeat <= 10_000:
            problems.append(("-r", f"{args.repeat}; allowed: 1..10000 runs"))
        if args.interval is not None or args.per_vcpu:
            problems.append(("-r", "prints totals over the runs: cannot be combined with -I "
                                   "or -A"))
    events = _args.events(args.events, problems)
    scn = _args.scenario(args, problems)
    check_output(args.output, "-o", problems)
    if problems:
        raise ConfigError(problems)
    # Everything is known good: only now may FILE be created or emptied.
    dest = open(args.output, "w") if args.output else out
    try:
        if args.output:
            print(f"# started on {time.ctime()}\n", file=dest)
        if args.repeat:
            return repeat(args, scn, events, dest)
        return stream(args, scn, events, dest)
    finally:
        if args.output:
            dest.close()


def stream(args, scn, events, dest) -> int:
    sim = Simulation(scn.config, interval=scn.interval, keep=())
    printer = Printer(args, events, dest)
    printer.header()
    progress = Progress(scn.duration, not args.no_progress)

    def intervals(block):
        printer.rows(block.ends_ns, block.counts, block.interval_ns)
        dest.flush()
    try:
        sim.run(until=scn.duration, on_intervals=intervals, on_slice=progress.to)
    except KeyboardInterrupt:
        progress.close()
        print(f"kvmsim stat: interrupted at {sim.now:g} simulated s; the intervals printed "
              "are complete", file=sys.stderr)
        return 130
    progress.close()
    last = sim.partial()                 # the intervals the run ends inside
    if last is not None:
        # An interval the run ends inside ran from its start to the run's end, not its length.
        ends = np.minimum(last.ends_ns, sim.now_ns)
        printer.rows(ends, last.counts, last.interval_ns,
                     run_ns=ends - (np.asarray(last.ends_ns) - last.interval_ns))
    return 0


def repeat(args, scn, events, dest) -> int:
    """perf stat -r: the mean of each event over N seeds, with its relative standard error."""
    totals = []
    progress = Progress(scn.duration * args.repeat, not args.no_progress)
    interrupted = False
    for i in range(args.repeat):
        config = scn.config.model_copy(update={"seed": scn.config.seed + i})
        sim = Simulation(config, interval=scn.duration, keep=())
        try:
            sim.run(until=scn.duration, on_slice=lambda now: progress.to(i * scn.duration + now))
        except KeyboardInterrupt:
            interrupted = True
            break
        totals.append(sim.result().totals)
    progress.close()
    n = len(totals)
    if n == 0:              # no run finished: no mean to print, only the message
        print(f"kvmsim stat: interrupted during run 1 of {args.repeat}; no run finished, "
              "nothing to print", file=sys.stderr)
        return 130
    print(f"\n Performance counter stats for 'kvmsim' ({n} runs, seeds {scn.config.seed}.."
          f"{scn.config.seed + n - 1}):\n", file=dest)
    for e in events:
        xs = [t[e] for t in totals]
        # The mean as an exact fraction: a float would misprint ns.* sums past 2**53.
        exact = Fraction(sum(xs), n)
        var = float(sum((x - exact) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        pct = 100 * math.sqrt(var / n) / float(exact) if exact else 0.0
        print(f"{round(exact):>18d} {pf.UNITS.get(e, ''):<4} {_names.perf_name(e):<32}  "
              f"( +-{pct:6.2f}% )", file=dest)
    if interrupted:
        print(f"kvmsim stat: interrupted during run {n + 1} of {args.repeat}; the mean is over "
              f"the {n} complete runs", file=sys.stderr)
        return 130
    return 0
