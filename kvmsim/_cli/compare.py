"""kvmsim compare: orders or scenario files side by side on the same seed."""

from __future__ import annotations

import json
import os
import sys
import time

from .. import _names, _perf_format as pf
from .._errors import ConfigError
from .._result import sum_over_vcpus
from .._simulation import Simulation
from . import _args
from ._progress import Progress
from .stat import check_output

HELP = "run orders or scenario files side by side on the same seed"
EPILOG = """examples:
  kvmsim compare --workload spec2017-vtune                 # linux-6.6 vs linux-6.7
  kvmsim compare linux-6.6 linux-6.7 linux-6.19 --plot cancels.png
  kvmsim compare examples/spec2017-vtune.toml examples/spec2017-vtune-amd.toml
  kvmsim compare linux-6.6 linux-6.7 -x, -o compare.csv
"""
DEFAULT_RUNS = ("linux-6.6", "linux-6.7")
ROUND_SECONDS = 0.2           # wall time per lockstep round, so Ctrl-C stops runs together


def add(sub) -> None:
    p = sub.add_parser("compare", help=HELP, epilog=EPILOG, formatter_class=_args.Formatter)
    p.add_argument("runs", nargs="*", metavar="ORDER|FILE",
                   help="orders (preset, NAME,...,EVENT, kernel tree or x86.c) or scenario "
                        f"files; default: {' '.join(DEFAULT_RUNS)}")
    _args.add_run_flags(p, duration=60.0)
    p.add_argument("-e", "--event", dest="events", default="probe:vmx_cancel_injection",
                   help="comma-separated events (default %(default)s); see stat --list-events")
    p.add_argument("-x", "--field-separator", dest="sep", metavar="SEP", type=_args.separator,
                   help="print CSV: time, run, count, unit, event")
    p.add_argument("-j", "--json", action="store_true", help="print JSON lines")
    p.add_argument("-o", "--output", metavar="FILE", help="write the table to FILE")
    p.add_argument("--plot", metavar="FILE.png", help="draw the first event per interval")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def is_scenario(run: str) -> bool:
    """A run given as a file that is not kernel source is a scenario, as for `stat FILE`."""
    return run == "-" or (os.path.isfile(run) and not _args.is_kernel_source(run))


def label(run: str) -> str:
    """A column title: the order, the scenario file's stem, or the kernel tree's name."""
    if not os.path.exists(run):
        return run
    path = os.path.abspath(run)
    if path.endswith(os.path.join("arch", "x86", "kvm", "x86.c")):
        path = path[:-len("/arch/x86/kvm/x86.c")]
    return os.path.basename(path.rstrip("/")).removesuffix(".toml")


def check_plot(path: str | None, problems: list) -> None:
    if path is None:
        return
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        problems.append(("--plot", "needs matplotlib: pip install 'kvmsim[plot]'"))
        return
    kinds = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in kinds:
        problems.append(("--plot", f"cannot draw {path!r}: unknown image type {ext!r}; "
                                   f"allowed: {', '.join(sorted(kinds))}"))
    check_output(path, "--plot", problems)


def run(args, out) -> int:
    runs = args.runs or list(DEFAULT_RUNS)
    problems = []
    if len(runs) < 2:
        problems.append(("runs", f"{' '.join(runs)!r}: give at least two orders or files"))
    if args.json and args.sep is not None:
        problems.append(("-j", "cannot be combined with -x; pick one format"))
    events = _args.events(args.events, problems)
    scns = [_args.scenario(args, problems, path=r) if is_scenario(r)
            else _args.scenario(args, problems, order=r, order_flag=f"runs: {r}") for r in runs]
    check_output(args.output, "-o", problems)
    check_plot(args.plot, problems)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    shapes = {(s.duration, s.interval) for s in scns}
    if len(shapes) > 1:
        raise ConfigError([("runs", f"the runs differ in duration/interval {sorted(shapes)};"
                                    " give --duration and -I to align them")])
    labels = [label(r) for r in runs]
    labels = [lab if len(lab) <= 18 else f"run{i + 1}" for i, lab in enumerate(labels)]
    results, interrupted = lockstep(scns, events, not args.no_progress)
    dest = open(args.output, "w") if args.output else out
    try:
        write(args, dest, scns[0], labels, events, results, interrupted)
    finally:
        if args.output:
            dest.close()
    if interrupted:
        print(f"kvmsim compare: interrupted at {min(r.duration for r in results):g} simulated "
              "s; complete intervals only, no totals", file=sys.stderr)
        return 130
    if args.plot:
        plot(results, labels, events[0], args.plot, scns[0])
        print(f"kvmsim compare: wrote {args.plot}", file=sys.stderr)
    return 0


def lockstep(scns, events, progress_on):
    """Advance every run to the same time, round by round: a Ctrl-C leaves them together."""
    sims = [Simulation(s.config, interval=s.interval, keep=events) for s in scns]
    duration = scns[0].duration
    step = 1e-3
    progress = Progress(duration, progress_on)
    interrupted = False
    try:
        while sims[0].now < duration:
            end = min(duration, sims[0].now + step)
            start = time.perf_counter()
            for sim in sims:
                sim.run(until=end)
            progress.to(end)
            step = step * 2 if time.perf_counter() - start < ROUND_SECONDS else step
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    return [sim.result() for sim in sims], interrupted


def write(args, dest, scn, labels, events, results, interrupted) -> None:
    n = min(r.complete for r in results) if interrupted else results[0].counts.shape[1]
    ivl_ns = results[0].interval_ns
    ends = [min((i + 1) * ivl_ns, results[0].duration_ns) for i in range(n)]
    for e in events:
        # Over the vCPUs in Python ints where int64 would overflow (ns.* of many vCPUs).
        series = [sum_over_vcpus(r.counts[:, :n, r.column(e)]) for r in results]
        totals = None if interrupted else [r.totals[e] for r in results]
        if args.json or args.sep is not None:
            for i, t_ns in enumerate(ends):
                for lab, s in zip(labels, series):
                    record(args, dest, pf.timestamp(t_ns).strip(), lab, int(s[i]), e)
            for lab, v in zip(labels, totals or []):
                record(args, dest, "total", lab, v, e)
            continue
        print(f"# {_names.perf_name(e)}, seed {scn.config.seed}, {scn.duration:g} s", file=dest)
        print("#           time " + " ".join(f"{lab:>18}" for lab in labels), file=dest)
        for i, t_ns in enumerate(ends):
            print(pf.timestamp(t_ns) + " " + " ".join(f"{int(s[i]):>18}" for s in series),
                  file=dest)
        if totals:
            print(f"{'total':>16} " + " ".join(f"{v:>18}" for v in totals), file=dest)
            print(f"{'difference':>16} " + " ".join(f"{v - totals[0]:>+18d}" for v in totals),
                  file=dest)
            print(f"{'ratio':>16} " + " ".join(
                f"{v / totals[0]:>18.4g}" if totals[0] else f"{'n/a':>18}" for v in totals),
                  file=dest)


def record(args, dest, time_field, run_label, count, event) -> None:
    unit, name = pf.UNITS.get(event, ""), _names.perf_name(event)
    if args.json:
        key = "total" if time_field == "total" else "interval"
        value = True if time_field == "total" else float(time_field)
        print(json.dumps({key: value, "run": run_label, "counter-value": pf.counter_value(count),
                          "unit": unit, "event": name}), file=dest)
    else:
        sep = "\t" if args.sep == "\\t" else args.sep
        print(sep.join([time_field, run_label, str(count), unit, name]), file=dest)


def plot(results, labels, counter, path, scn) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r, lab in zip(results, labels):
        r.plot(counter, ax=ax, label=lab)
    means = [max(1, r.intervals[counter].mean()) for r in results]
    if max(means) / min(means) >= 100:
        ax.set_yscale("log")
    workload = scn.config.workload
    name = next((k for k, f in _args.WORKLOADS.items() if f() == workload), "custom workload")
    ax.set_title(f"{_names.perf_name(counter)} per {results[0].interval:g} s: {name}, "
                 f"{workload.vcpus} vCPUs, seed {scn.config.seed}")
    ax.legend()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise ConfigError([("--plot", f"cannot write {path}: {e.strerror}")]) from None
    finally:
        plt.close(fig)
