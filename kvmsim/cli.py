"""The `kvmsim` command: stat (perf stat -I), compare, trace (trace-cmd report), orders,
and the order analysis commands lint-order, optimize and what-if (docs/analysis.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __version__, _sweep_cli, analysis, catalogue, graph, orders
from .config import Config, resolve_order
from .errors import ConfigError
from .limits import MAX_SECONDS, MIN_SECONDS
from .perf_format import (INTERVAL_HEADER, INTERVAL_HEADER_CPU, counter_names, csv_line,
                          event_name, interval_line, json_line, resolve_events, timestamp)
from .scenario import Scenario
from .simulation import Simulation, simulate
from .source_order import order_from_source
from .workload import PRESETS as WORKLOADS

EPILOG = {
    "stat": """examples:
  kvmsim stat --order linux-6.6 --workload spec2017-vtune --duration 60 -I 10000
  kvmsim stat examples/spec2017-vtune.toml --order linux-6.7 -x, -o counts.csv
  kvmsim stat --workload anchor -e kvm:kvm_exit,kvmsim:nmis_dropped -A -j
""",
    "compare": """examples:
  kvmsim compare --workload spec2017-vtune                 # linux-6.6 vs linux-6.7
  kvmsim compare linux-6.6 linux-6.7 linux-6.19 --plot cancels.png
  kvmsim compare examples/spec2017-vtune.toml examples/spec2017-vtune-amd.toml
""",
    "trace": """examples:
  kvmsim trace --order linux-6.6 --workload spec2017-vtune --duration 0.002 --vcpu 0
  kvmsim trace examples/pmi-trace.toml --events kvm_exit,kvm_check_request,vmx_cancel_injection
""",
    "orders": """examples:
  kvmsim orders                                   # the presets
  kvmsim orders linux-6.6                         # one preset, with bit numbers
  kvmsim order --from-source ~/linux              # read vcpu_enter_guest() of a tree
""",
    "lint-order": """examples:
  kvmsim lint-order linux-6.6                     # PMI -> NMI: exit status 1
  kvmsim lint-order linux-6.6 --workload spec2017-vtune   # ... with its measured cost
  kvmsim lint-order ~/linux/arch/x86/kvm/x86.c --lvtpc smi
""",
    "optimize": """examples:
  kvmsim optimize --workload spec2017-vtune --from linux-6.6
""",
    "what-if": """examples:
  kvmsim what-if --workload spec2017-vtune --order linux-6.6
""",
}
DEFAULT_EVENTS = "probe:vmx_cancel_injection"
TRACE_EVENTS = ("kvm_exit", "kvm_make_request", "kvm_check_request", "process_nmi",
                "kvm_inj_nmi", "kvm_inj_virq", "vmx_cancel_injection", "kvm_entry")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _order(text: str) -> str | list[str]:
    """A preset name, NAME,NAME,...,EVENT, or a kernel's x86.c (or tree) to read it from."""
    if "," not in text and text not in orders.PRESETS and os.path.exists(text):
        try:
            return list(order_from_source(text).names(known_only=True))
        except ValueError as e:
            raise ConfigError([("order", str(e))]) from None
    if "," not in text:
        return text.strip()
    return [n.strip() for n in text.split(",") if n.strip()]


def _check_seconds(value: float, flag: str, problems, unit: str = "s") -> None:
    """A duration flag in range; -I is in ms, so its unit scales the bounds."""
    scale = 1000 if unit == "ms" else 1
    if not MIN_SECONDS * scale <= value <= MAX_SECONDS * scale:
        problems.append((flag, f"{value:g} {unit}; allowed: {MIN_SECONDS * scale:g} to "
                               f"{MAX_SECONDS * scale:g} {unit}"))


def _run_flags(p: argparse.ArgumentParser, duration_help: str) -> None:
    """Flags that override a scenario file (None: not given)."""
    p.add_argument("--order", help=f"check order: {', '.join(orders.PRESETS)} or "
                                   "NAME,NAME,...,EVENT (default linux-6.7)")
    p.add_argument("--workload", help=f"workload preset: {', '.join(WORKLOADS)} "
                                      "(default spec2017-vtune)")
    p.add_argument("--vcpus", type=int, help="number of vCPUs (overrides the workload's)")
    p.add_argument("--duration", type=float, help=duration_help)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--engine", help="cython (default) or python")
    p.add_argument("--vendor", help="intel (default) or amd")


def _stat_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-I", "--interval-print", dest="interval", type=int, metavar="MSEC",
                   help="print counts every MSEC ms (default 10000)")
    p.add_argument("-e", "--event", dest="events", default=DEFAULT_EVENTS,
                   help="comma-separated events (default %(default)s); see --list-events")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kvmsim", description="Simulate KVM x86's VM-Enter path "
                  "(vcpu_enter_guest): request checks, NMI/PMI injection, cancelled VM-Enters.")
    top.add_argument("--version", action="version", version=f"kvmsim {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name, help_):
        return sub.add_parser(name, help=help_, epilog=EPILOG.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    stat = command("stat", "count events like `perf stat -I`")
    stat.add_argument("scenario", nargs="?", help="a scenario file (TOML); flags override it")
    _run_flags(stat, "simulated seconds (default 60)")
    _stat_flags(stat)
    stat.add_argument("-x", "--field-separator", dest="sep", metavar="SEP",
                      help="print CSV with this separator, as perf stat -x does")
    stat.add_argument("-j", "--json", action="store_true", help="print JSON lines as perf does")
    stat.add_argument("-o", "--output", metavar="FILE", help="write the counts to FILE")
    stat.add_argument("-A", "--per-vcpu", action="store_true",
                      help="one count per vCPU (like perf stat -A, CPU<n> = vCPU n)")
    stat.add_argument("--no-progress", action="store_true", help="no progress bar")
    stat.add_argument("--list-events", action="store_true", help="list events and exit")

    cmp_ = command("compare", "run orders or scenario files side by side on the same seed")
    cmp_.add_argument("runs", nargs="*", metavar="ORDER|FILE",
                      help="orders (preset or NAME,...,EVENT) or scenario files; "
                           "default: linux-6.6 linux-6.7")
    _run_flags(cmp_, "simulated seconds (default 60)")
    _stat_flags(cmp_)
    cmp_.add_argument("--plot", metavar="FILE.png", help="draw the first event per interval")

    trace = command("trace", "print each simulated event of a short run, trace-cmd style")
    trace.add_argument("scenario", nargs="?", help="a scenario file (TOML); flags override it")
    _run_flags(trace, "simulated seconds (default 0.01)")
    trace.add_argument("--max-events", type=int, default=1000, help="stop after N lines "
                       "(default %(default)s)")
    trace.add_argument("--events", help=f"only these events: {','.join(TRACE_EVENTS)}")
    trace.add_argument("--vcpu", type=int, help="only this vCPU")

    ords = sub.add_parser("orders", aliases=["order"], help="list the order presets, print one "
                          "with bit numbers, or read one from a kernel's x86.c",
                          epilog=EPILOG["orders"],
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    ords.add_argument("name", nargs="?", help="a preset or NAME,NAME,...,EVENT")
    ords.add_argument("--from-source", metavar="PATH",
                      help="a kernel tree or its arch/x86/kvm/x86.c")

    lint = command("lint-order", "report the back edges of a check order (exit 1 if one fires)")
    lint.add_argument("order", help="a preset, NAME,...,EVENT, a scenario file, or a kernel "
                                    "tree / x86.c")
    lint.add_argument("--lvtpc", choices=graph.LVTPC_MODES,
                      help="the guest's LVTPC delivery mode (default: the workload's, or nmi)")
    lint.add_argument("--workload", help="measure each firing back edge on this workload")
    lint.add_argument("--duration", type=float, default=10.0,
                      help="simulated seconds when measuring (default %(default)s)")
    lint.add_argument("--seed", type=int, default=0)

    for name, help_, flag in (
            ("optimize", "the nearest order without avoidable back edges, and its gain",
             "--from"),
            ("what-if", "cancelled VM-Enters per second by request and path", "--order")):
        p = command(name, help_)
        p.add_argument(flag, dest="order", default="linux-6.19",
                       help="check order (default %(default)s)")
        p.add_argument("--workload", default="spec2017-vtune",
                       help="workload preset (default %(default)s)")
        p.add_argument("--vendor", default="intel", choices=("intel", "amd"))
        p.add_argument("--duration", type=float, default=10.0,
                       help="simulated seconds per run (default %(default)s)")
        p.add_argument("--seed", type=int, default=0)
    _sweep_cli.add_command(sub)
    return top


# --- from flags and files to a Scenario ------------------------------------------------------
def _scenario(args, problems, order=None, path=None, duration=60.0,
              order_flag="--order") -> Scenario | None:
    """The scenario a file and the flags describe; problems are appended, all at once."""
    path = path or getattr(args, "scenario", None)
    if path:
        try:
            base = Scenario.load(path)
        except ConfigError as e:
            problems += e.problems
            return None
    else:
        base = Scenario(duration=duration)
    given = {f: getattr(args, f) for f in ("workload", "seed", "engine", "vendor", "vcpus")
             if getattr(args, f) is not None}
    order = order if order is not None else args.order
    if order is not None:
        given["order"] = _order(order)
    data = {**base.config.model_dump(), **given}
    if "vcpus" in given:
        workload = data["workload"]
        if isinstance(workload, str) and workload in WORKLOADS:
            workload = WORKLOADS[workload]().model_dump()
        if isinstance(workload, dict):
            data["workload"] = {**workload, "vcpus": data.pop("vcpus")}
    data.pop("vcpus", None)
    run = {"duration": base.duration, "interval": base.interval}
    bad = len(problems)
    if args.duration is not None:
        run["duration"] = args.duration
        _check_seconds(args.duration, "--duration", problems)
    if getattr(args, "interval", None) is not None:
        run["interval"] = args.interval / 1000
        _check_seconds(args.interval, "-I", problems, unit="ms")
    try:
        config = Config(**data)
    except ConfigError as e:
        for p, m in e.problems:
            top = p.split(".")[0]
            if "vcpus" in given and top == "workload":
                problems.append((f"--vcpus ({p})", m))
            elif top == "order" and "order" in given:
                problems.append((order_flag, m))
            else:
                problems.append((f"--{top}" if top in given else p, m))
        return None
    return None if len(problems) > bad else Scenario(config=config, **run)


def _events(spec: str, problems) -> list[str]:
    try:
        return resolve_events(spec, counter_names())
    except ValueError as e:
        problems.append(("-e", str(e)))
        return []


def _progress(duration: float, enabled: bool):
    """A tqdm bar on stderr for runs that last (shown after 2 s, only on a terminal)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=duration, delay=2.0, unit="sim s", file=sys.stderr, leave=False,
                bar_format="{l_bar}{bar}| {n:.3g}/{total:g} sim s [{elapsed}<{remaining}]")


def _simulate(scn: Scenario, progress: bool):
    """Run a scenario; on Ctrl-C return what completed, with interrupted=True."""
    sim = Simulation(scn.config, interval=scn.interval)
    bar = _progress(scn.duration, progress)
    done = [0.0]

    def tick(now):
        if bar is not None:
            bar.update(now - done[0])
        done[0] = now
    interrupted = False
    try:
        sim.run(until=scn.duration, on_slice=tick)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    return sim.result(), interrupted


# --- commands -----------------------------------------------------------------------------
def _stat_lines(res, events, args, complete: int):
    interval_ns = round(res.interval * 1e9)
    counts = res.counts.sum(axis=0) if not args.per_vcpu else None
    for i in range(complete):
        t_ns = round(res.times[i] * 1e9)
        vcpus = range(res.counts.shape[0]) if args.per_vcpu else [None]
        for e in events:
            col = res._column(e)
            for v in vcpus:
                n = int(res.counts[v, i, col] if v is not None else counts[i, col])
                if args.json:
                    yield json_line(t_ns, n, e, interval_ns, vcpu=v)
                elif args.sep is not None:
                    yield csv_line(t_ns, n, e, interval_ns, args.sep, vcpu=v)
                else:
                    yield interval_line(t_ns, n, e, vcpu=v)


def cmd_stat(args, out) -> int:
    if args.list_events:
        for c in counter_names():
            print(event_name(c), file=out)
        return 0
    problems = []
    if args.json and args.sep is not None:
        problems.append(("-j", "cannot be combined with -x; pick one format"))
    events = _events(args.events, problems)
    scn = _scenario(args, problems)
    dest = out
    if args.output:
        try:
            dest = open(args.output, "w")
        except OSError as e:
            problems.append(("-o", f"cannot write {args.output}: {e.strerror}"))
    if problems:
        raise ConfigError(problems)
    res, interrupted = _simulate(scn, not args.no_progress)
    # Only whole intervals are printed (perf prints an interval when its timer fires).
    complete = len(res.times) if not interrupted else int(res.duration / res.interval + 1e-9)
    try:
        if args.output:
            print(f"# started on {time.ctime()}\n", file=dest)
        if not args.json and args.sep is None:
            print(INTERVAL_HEADER_CPU if args.per_vcpu else INTERVAL_HEADER, file=dest)
        for line in _stat_lines(res, events, args, complete):
            print(line, file=dest)
    finally:
        if args.output:
            dest.close()
    if interrupted:
        print(f"kvmsim stat: interrupted at {res.duration:g} simulated s", file=sys.stderr)
        return 130
    return 0


def _is_scenario(run: str) -> bool:
    return run.endswith(".toml")


def _label(run: str) -> str:
    """A column title: the order, the scenario file's stem, or the kernel tree's name."""
    if not os.path.exists(run):
        return run
    path = os.path.abspath(run)
    if path.endswith(os.path.join("arch", "x86", "kvm", "x86.c")):
        path = path[:-len("/arch/x86/kvm/x86.c")]
    name = os.path.basename(path.rstrip("/"))
    return name.removesuffix(".toml")


def cmd_compare(args, out) -> int:
    runs = args.runs or ["linux-6.6", "linux-6.7"]
    problems = []
    if len(runs) < 2:
        problems.append(("runs", f"{' '.join(runs)!r}: give at least two orders or files"))
    events = _events(args.events, problems)
    scns = [_scenario(args, problems, path=r) if _is_scenario(r)
            else _scenario(args, problems, order=r, order_flag=f"runs: {r}") for r in runs]
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        problems.append(("--plot", f"cannot write {args.plot}: no such directory"))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    intervals = {(s.duration, s.interval) for s in scns}
    if len(intervals) > 1:
        raise ConfigError([("runs", f"the runs differ in duration/interval {sorted(intervals)};"
                                    " give --duration and -I to align them")])
    results = [_simulate(s, progress=False)[0] for s in scns]
    labels = [_label(r) for r in runs]
    labels = [lab if len(lab) <= 18 else f"run{i + 1}" for i, lab in enumerate(labels)]
    for e in events:
        print(f"# {event_name(e)}, seed {scns[0].config.seed}, {scns[0].duration:g} s", file=out)
        print("#           time " + " ".join(f"{lab:>18}" for lab in labels), file=out)
        series = [r.counts[:, :, r._column(e)].sum(axis=0) for r in results]
        for i, t in enumerate(results[0].times):
            row = " ".join(f"{int(c[i]):>18}" for c in series)
            print(f"{timestamp(round(t * 1e9))} {row}", file=out)
        totals = [r.totals[e] for r in results]
        print(f"{'total':>16} " + " ".join(f"{v:>18}" for v in totals), file=out)
        print(f"{'difference':>16} " + " ".join(f"{v - totals[0]:>+18d}" for v in totals),
              file=out)
        print(f"{'ratio':>16} " + " ".join(
            f"{v / totals[0]:>18.4g}" if totals[0] else f"{'n/a':>18}" for v in totals),
              file=out)
    if args.plot:
        _plot(results, labels, events[0], args.plot)
    return 0


def _plot(results, labels, counter, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r, label in zip(results, labels):
        r.plot(counter, ax=ax, label=label)
    means = [max(1, r.intervals[counter].mean()) for r in results]
    if max(means) / min(means) >= 100:
        ax.set_yscale("log")
    ax.set_title(f"{event_name(counter)} per {results[0].interval:g} s")
    ax.legend()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise ConfigError([("--plot", f"cannot write {path}: {e.strerror}")]) from None
    finally:
        plt.close(fig)


class _Enough(Exception):
    pass


def cmd_trace(args, out) -> int:
    problems = []
    wanted = TRACE_EVENTS
    if args.events:
        wanted = tuple(e.strip() for e in args.events.split(",") if e.strip())
        bad = [e for e in wanted if e not in TRACE_EVENTS]
        if bad:
            problems.append(("--events", f"unknown {', '.join(map(repr, bad))}; allowed: "
                                         f"{', '.join(TRACE_EVENTS)}"))
    if args.max_events <= 0:
        problems.append(("--max-events", f"{args.max_events}; must be > 0"))
    scn = _scenario(args, problems, duration=0.01)
    if scn and args.vcpu is not None and not 0 <= args.vcpu < scn.config.workload.vcpus:
        problems.append(("--vcpu", f"{args.vcpu}; allowed: 0..{scn.config.workload.vcpus - 1}"))
    if problems:
        raise ConfigError(problems)
    # Traces come from the reference engine, which reports every event; counts are the same.
    sim = Simulation(scn.config.model_copy(update={"engine": "python"}), interval=scn.duration)
    printed = [0]

    def trace(t_ns, vcpu, event, fields):
        if event in wanted and (args.vcpu is None or vcpu == args.vcpu):
            secs, ns = divmod(t_ns, 1_000_000_000)
            print(f"{f'CPU {vcpu}/KVM':>16}-{1000 + vcpu:<5} [{vcpu:03d}] {secs:>5}.{ns:09d}: "
                  f"{event + ':':<21} {fields}".rstrip(), file=out)
            printed[0] += 1
            if printed[0] >= args.max_events:
                raise _Enough
    sim._engine.set_trace(trace)
    try:
        sim.run(until=scn.duration)
    except _Enough:
        pass
    return 0


def cmd_orders(args, out) -> int:
    if args.from_source:
        try:
            so = order_from_source(args.from_source)
        except ValueError as e:
            raise ConfigError([("--from-source", str(e))]) from None
        print(f"# {so.path}: vcpu_enter_guest() at line {so.function_line}"
              + (f", Linux {so.version}" if so.version else ""), file=out)
        for i, c in enumerate(so.checks):
            note = "" if c.known else "  (not in kvmsim's catalogue" + (
                f"; later {c.renamed_to})" if c.renamed_to else ")")
            print(f"{i:>3} {c.name:<30} line {c.line:>5}  {c.kind:<12}"
                  f"{' #if ' + c.condition if c.condition else ''}{note}", file=out)
        for w in so.warnings:
            print(f"# warning: {w}", file=out)
        print(",".join(so.names(known_only=True)), file=out)
        return 0
    if args.name is None:
        for name, checks in orders.PRESETS.items():
            print(f"{name:<12} {len(checks)} checks: ... {', '.join(checks[17:22])} ...",
                  file=out)
        return 0
    try:
        checks = resolve_order(_order(args.name))
    except ValueError as e:
        raise ConfigError([("order", str(e))]) from None
    for i, name in enumerate(checks):
        print(f"{i:>3} {name:<30} bit {catalogue.bit_of(name):>2}", file=out)
    return 0


def _lint_target(args):
    """(label, order, workload or None) from a preset, list, scenario file or kernel source."""
    if args.order.endswith(".toml"):
        scn = Scenario.load(args.order)
        return args.order, scn.config.check_order, scn.config.workload
    order = _order(args.order)
    try:
        return (args.order if isinstance(order, str) else "order",
                resolve_order(order), None)
    except ValueError as e:
        raise ConfigError([("order", str(e))]) from None


def cmd_lint_order(args, out) -> int:
    label, order, workload = _lint_target(args)
    problems = []
    if args.workload:
        try:
            cfg = Config(order=list(order), workload=args.workload, seed=args.seed)
        except ConfigError as e:
            problems += [("--workload" if p == "workload" else p, m) for p, m in e.problems]
        else:
            workload = cfg.workload
    _check_seconds(args.duration, "--duration", problems)
    if problems:
        raise ConfigError(problems)
    ctx = graph.Context(lvtpc=args.lvtpc or (workload.lvtpc if workload else "nmi"))
    edges = analysis.back_edges(order, ctx)
    measured = None
    if workload is not None and any(b.active for b in edges):
        # Measure in the context linted: --lvtpc overrides the workload's mode.
        workload = workload.model_copy(update={"lvtpc": ctx.lvtpc})
        res = simulate(Config(order=list(order), workload=workload, seed=args.seed),
                       duration=args.duration)
        measured = (res, args.workload or label)
    print(f"# {label}: {len(order)} checks; LVTPC delivery mode {ctx.lvtpc.upper()}, "
          f"APICv {'on' if ctx.apicv else 'off'}", file=out)
    for b in edges:
        e = b.edge
        state = "FIRES" if b.active else "conditional"
        print(f"back edge {e.src} ({b.src_pos}) -> {e.dst} ({b.dst_pos})  {state}", file=out)
        print(f"    when: {graph.describe(e)}", file=out)
        print(f"    via:  {e.via}  [{e.cite}]", file=out)
        print(f"    cost: {b.cost}", file=out)
        if measured and b.active:
            res, name = measured
            rate = res.totals[f"cancels.backedge.{e.dst}"] / res.duration
            print(f"    measured on {name} ({res.duration:g} s): {rate:,.1f} cancelled "
                  f"VM-Enters/s with {e.dst} pending", file=out)
    for note in analysis.gates():
        print(f"note: {note}", file=out)
    firing = sum(b.active for b in edges)
    print(f"{firing} back edge{'s' * (firing != 1)} fire{'s' * (firing == 1)} in this "
          f"context{': exit status 1' if firing else ''}", file=out)
    return 1 if firing else 0


def _analysis_config(args, order_flag: str) -> Config:
    """optimize and what-if: a preset workload under one order, for --duration seconds."""
    problems = []
    _check_seconds(args.duration, "--duration", problems)
    try:
        cfg = Config(order=_order(args.order), workload=args.workload, seed=args.seed,
                     vendor=args.vendor)
    except ConfigError as e:
        problems += [(order_flag if p == "order" else f"--{p}" if p else p, m)
                     for p, m in e.problems]
    if problems:
        raise ConfigError(problems)
    return cfg


def cmd_optimize(args, out) -> int:
    before = _analysis_config(args, "--from")
    ctx = graph.Context.of(before)
    try:
        order, moves = analysis.optimize(before.check_order, ctx)
    except ValueError as e:
        raise ConfigError([("--from", str(e))]) from None
    label = before.order_name
    print(f"# {label} for {args.workload} (LVTPC delivery mode {ctx.lvtpc.upper()}, "
          f"{args.vendor})", file=out)
    if not moves:
        print(f"{label} has no avoidable back edge for this workload", file=out)
        return 0
    for m in moves:
        print(f"move {m.name}: position {m.old_pos} -> {m.new_pos}, after {m.after}", file=out)
    print(f"order: {','.join(order)}", file=out)
    after = before.model_copy(update={"order": list(order)})
    rates = [simulate(c, duration=args.duration).totals["canceled_vmenters"] / args.duration
             for c in (before, after)]
    print(f"{'':<12}{'cancelled VM-Enters/s':>24}", file=out)
    print(f"{label:<12}{rates[0]:>24,.1f}", file=out)
    print(f"{'optimized':<12}{rates[1]:>24,.1f}", file=out)
    saved = rates[0] - rates[1]
    share = f" ({saved / rates[0]:.1%})" if rates[0] else ""
    print(f"{'saved':<12}{saved:>24,.1f}{share}", file=out)
    return 0


def cmd_what_if(args, out) -> int:
    cfg = _analysis_config(args, "--order")
    res = simulate(cfg, duration=args.duration)
    rows = {r.request: r for r in analysis.what_if(res)}
    raised = cfg.workload.raised_requests()
    print(f"# {args.workload}, {cfg.order_name}, {args.duration:g} s: cancelled VM-Enters per "
          "second by the request pending at kvm_vcpu_exit_request()", file=out)
    print(f"{'request':<26}{'arrived late':>14}{'back edge':>12}  raised by", file=out)
    for n in cfg.check_order:
        r = rows.get(n)
        if r is None and catalogue.canonical(n) not in raised:
            continue
        a, b = (r.async_per_s, r.backedge_per_s) if r else (0.0, 0.0)
        by = ", ".join(r.raised_by) if r and r.raised_by else ""
        print(f"{n:<26}{a:>14,.1f}{b:>12,.1f}  {by}", file=out)
    total = res.totals["canceled_vmenters"] / res.duration
    print(f"{'cancelled VM-Enters/s':<26}{total:>14,.1f}  (a cancel with two requests "
          "pending counts for both)", file=out)
    return 0


COMMANDS = {"stat": cmd_stat, "compare": cmd_compare, "trace": cmd_trace, "orders": cmd_orders,
            "order": cmd_orders, "lint-order": cmd_lint_order, "optimize": cmd_optimize,
            "what-if": cmd_what_if, "sweep": _sweep_cli.cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except ConfigError as e:
        for path, msg in e.problems:
            print(f"kvmsim {args.command}: error: {path + ': ' if path else ''}{msg}",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
