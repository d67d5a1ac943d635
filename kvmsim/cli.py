"""The `kvmsim` command: `stat` (perf stat -I) and `compare` (orders side by side)."""

from __future__ import annotations

import argparse
import math
import sys

from . import __version__, catalogue, orders
from .config import Config, resolve_order
from .errors import ConfigError
from .perf_format import INTERVAL_HEADER, counter_names, event_name, interval_line, \
    resolve_events, timestamp
from .simulation import simulate
from .workload import PRESETS as WORKLOADS

EPILOG_STAT = """examples:
  kvmsim stat --order linux-6.6 --workload spec2017-vtune --duration 60 -I 10000
  kvmsim stat --order PMU,PMI,SMI,NMI,EVENT --workload anchor -e kvm:kvm_exit,kvmsim:nmis_dropped
"""
EPILOG_COMPARE = """examples:
  kvmsim compare --workload spec2017-vtune
  kvmsim compare --orders linux-6.6,linux-6.19 --workload anchor --duration 5 -I 1000
"""
DEFAULT_EVENTS = "probe:vmx_cancel_injection"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _order(text: str) -> str | list[str]:
    """A preset name, or NAME,NAME,...,EVENT."""
    if "," not in text:
        return text.strip()
    return [n.strip() for n in text.split(",") if n.strip()]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", default="spec2017-vtune",
                   help=f"workload preset ({', '.join(WORKLOADS)}; default %(default)s)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="simulated seconds (default %(default)s)")
    p.add_argument("-I", "--interval-print", dest="interval", type=int, default=10000,
                   metavar="MSEC", help="print counts every MSEC ms (default %(default)s)")
    p.add_argument("-e", "--event", dest="events", default=DEFAULT_EVENTS,
                   help="comma-separated events (default %(default)s); see --list-events")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--engine", default="cython", help="cython (default) or python")
    p.add_argument("--vendor", default="intel", help="intel (default) or amd")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kvmsim", description="Simulate KVM x86's VM-Enter path "
                  "(vcpu_enter_guest): request checks, NMI/PMI injection, cancelled VM-Enters.")
    top.add_argument("--version", action="version", version=f"kvmsim {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    stat = sub.add_parser("stat", help="count events like `perf stat -I`", epilog=EPILOG_STAT,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    stat.add_argument("--order", default="linux-6.7",
                      help=f"check order: {', '.join(orders.PRESETS)} or NAME,NAME,...,EVENT "
                           "(default %(default)s)")
    _common(stat)
    stat.add_argument("--list-events", action="store_true", help="list events and exit")
    cmp_ = sub.add_parser("compare", help="run orders side by side on the same seed",
                          epilog=EPILOG_COMPARE,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp_.add_argument("--orders", default="linux-6.6,linux-6.7",
                      help="orders to compare, separated by ';' when they are lists "
                           "(default %(default)s)")
    _common(cmp_)
    ords = sub.add_parser("orders", help="list the order presets, or print one with bit numbers")
    ords.add_argument("name", nargs="?", help="a preset or NAME,NAME,...,EVENT")
    return top


def _config(args, order, problems: list[tuple[str, str]]) -> Config | None:
    """The Config the flags describe, or None with the problems appended."""
    if args.engine not in ("cython", "python"):
        problems.append(("--engine", f"{args.engine!r}; allowed: cython, python"))
    if args.vendor not in ("intel", "amd"):
        problems.append(("--vendor", f"{args.vendor!r}; allowed: intel, amd"))
    if args.interval <= 0:
        problems.append(("-I", f"{args.interval} ms; must be > 0"))
    if not (0 < args.duration < math.inf):
        problems.append(("--duration", f"{args.duration} s; must be a number > 0"))
    try:
        return Config(order=order, workload=args.workload, seed=args.seed,
                      engine=args.engine if args.engine in ("cython", "python") else "python",
                      vendor=args.vendor if args.vendor in ("intel", "amd") else "intel")
    except ConfigError as e:
        problems += [(f"--{p}" if p else "", m) for p, m in e.problems]
        return None


def _events(spec: str, problems: list[tuple[str, str]]) -> list[str]:
    try:
        return resolve_events(spec, counter_names())
    except ValueError as e:
        problems.append(("-e", str(e)))
        return []


def cmd_stat(args, out) -> None:
    if args.list_events:
        for c in counter_names():
            print(event_name(c), file=out)
        return
    problems = []
    events = _events(args.events, problems)
    cfg = _config(args, _order(args.order), problems)
    if problems:
        raise ConfigError(problems)
    res = simulate(cfg, duration=args.duration, interval=args.interval / 1000)
    print(INTERVAL_HEADER, file=out)
    series = res.intervals
    for i, t in enumerate(res.times):
        for e in events:
            print(interval_line(round(t * 1e9), int(series[e][i]), e), file=out)


def cmd_compare(args, out) -> None:
    sep = ";" if ";" in args.orders else ","
    names = [o.strip() for o in args.orders.split(sep) if o.strip()]
    problems = []
    if len(names) < 2:
        problems.append(("--orders", f"{args.orders!r}: give at least two orders"))
    events = _events(args.events, problems)
    cfgs = [_config(args, _order(n), problems) for n in names]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    results = [simulate(c, duration=args.duration, interval=args.interval / 1000)
               for c in cfgs]
    labels = [n if len(n) <= 18 else f"order{i + 1}" for i, n in enumerate(names)]
    wl = cfgs[0].workload
    for e in events:
        print(f"# {event_name(e)}: workload {args.workload} ({wl.vcpus} vCPUs), "
              f"seed {args.seed}, {args.duration:g} s", file=out)
        print("#           time " + " ".join(f"{l:>18}" for l in labels), file=out)
        for i, t in enumerate(results[0].times):
            counts = " ".join(f"{int(r.intervals[e][i]):>18}" for r in results)
            print(f"{timestamp(round(t * 1e9))} {counts}", file=out)
        totals = [r.totals[e] for r in results]
        print(f"{'total':>16} " + " ".join(f"{v:>18}" for v in totals), file=out)
        base = totals[0]
        for label, v in zip(labels[1:], totals[1:]):
            ratio = f"{v / base:.4g}x" if base else "n/a"
            print(f"# {label} vs {labels[0]}: {v - base:+d} ({ratio})", file=out)


def cmd_orders(args, out) -> None:
    if args.name is None:
        for name, checks in orders.PRESETS.items():
            print(f"{name:<12} {len(checks)} checks: ... {', '.join(checks[17:22])} ...",
                  file=out)
        return
    try:
        checks = resolve_order(_order(args.name))
    except ValueError as e:
        raise ConfigError([("order", str(e))]) from None
    for i, name in enumerate(checks):
        print(f"{i:>3} {name:<30} bit {catalogue.bit_of(name):>2}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        {"stat": cmd_stat, "compare": cmd_compare, "orders": cmd_orders}[args.command](
            args, sys.stdout)
    except ConfigError as e:
        for path, msg in e.problems:
            print(f"kvmsim {args.command}: error: {path + ': ' if path else ''}{msg}",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kvmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
