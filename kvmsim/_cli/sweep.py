"""`kvmsim sweep`: a grid of runs from the command line (kvmsim.sweep; docs/sweep.md)."""

from __future__ import annotations

import argparse
import math
import os
import sys

from .. import _names, catalogue
from .._config import Config
from .._errors import ConfigError
from .._scenario import Scenario

from .. import _sweep as S
from .._sweep import grid as G
from .._sweep import points as P
from .._sweep.store import open_store
from . import _args

EPILOG = """grid values (--grid PATH=V1,V2,...; repeat --grid for more paths):
  PATH is a field of the scenario: order, vendor, engine, workload (a preset),
  workload.vcpus, workload.guest_exit_rate, workload.sources[0].rate, costs.state_load,
  costs.handlers.PMU, ... A value is parsed by its field's type; a list (an order given
  as request names) is NAME+NAME+...+EVENT; `none` is None. One value sets a field.

examples:
  kvmsim sweep examples/spec2017-vtune.toml --grid order=linux-6.6,linux-6.7 \\
      --grid workload.vcpus=1,8,64 --seeds 5 --duration 10 --out sweep.jsonl
  kvmsim sweep --grid workload=anchor --grid "workload.sources[0].rate=500,1000,2000" \\
      --grid order=linux-6.6,linux-6.7 --seeds 3 --plot pmi-rate.png
  kvmsim sweep scenario.toml --grid order=linux-6.6,linux-6.7 --grid workload.vcpus=1,8 \\
      --heatmap --plot grid.png --scheduler tcp://head-node:8786 --out sweep.parquet
"""


# What to give instead of a grid path that is a flag of the sweep, not a field.
GRID_HINTS = {"duration": "; the run length is not swept: use --duration",
              "seeds": "; use --seeds for the number of seeds per point",
              "seed": "; use --seed for the base seed (--seeds for how many)"}


def add(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a grid of configs x seeds (local threads or "
                              "a dask cluster) and summarize", epilog=EPILOG,
                              formatter_class=_args.Formatter)
    p.add_argument("scenario", nargs="?", help="the base scenario file (TOML); default: "
                                               "kvmsim's defaults")
    p.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2,...",
                   help="a field and its values (repeatable; see below)")
    p.add_argument("--seeds", type=_args.integer(1), default=1,
                   help="seeds per point, from SeedSequence(--seed).spawn (default 1)")
    p.add_argument("--seed", type=_args.integer(0), help="the base seed (default: the scenario's)")
    p.add_argument("--duration", type=_args.SECONDS, help="simulated seconds per run (default: the "
                                                  "scenario's, 60)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="a dask scheduler, tcp://host:8786 (default: local threads)")
    p.add_argument("--out", metavar="FILE", help="append rows to FILE as they arrive (.jsonl, "
                   "or .parquet with pyarrow); an existing FILE is resumed")
    p.add_argument("-e", "--counters", default="canceled_vmenters", metavar="NAMES",
                   help="comma-separated counters to summarize (default %(default)s)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the first counter over the grid")
    p.add_argument("--heatmap", action="store_true",
                   help="--plot as a heatmap of the two grid paths that vary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def _grid(specs: list[str], problems) -> dict:
    grid = {}
    for spec in specs:
        path, eq, text = spec.partition("=")
        path = path.strip()
        values = [v.strip() for v in text.split(",")]
        if not eq or not path or "" in values:
            problems.append(("--grid", f"{spec!r}; write PATH=V1,V2,... with no empty value"))
        elif path in grid:
            problems.append(("--grid", f"{path} given twice; list all its values once"))
        else:
            grid[path] = [G.Text(v) for v in values]
    return grid


def _base(args, problems) -> Scenario | None:
    try:
        scn = Scenario.load(args.scenario) if args.scenario else Scenario()
        if args.seed is not None:
            scn = scn.model_copy(update={"config": Config(
                **{**scn.config.model_dump(), "seed": args.seed})})
        return scn
    except ConfigError as e:
        problems += [("--seed" if p == "seed" else p, m) for p, m in e.problems]
        return None


def _counters(args, scn, plan, problems) -> list[str]:
    """The -e names, checked against the plan's counters; if the grid is bad, against those
    any order could have (a per-request counter of any request); if the base scenario is
    bad too, against the default scenario's."""
    # Two names of one counter (or one name twice) are one column: the first is kept.
    names = list(dict.fromkeys(_names.canonical(n.strip()) for n in args.counters.split(",")
                               if n.strip()))
    if plan:
        known = set(plan.counters)
    else:
        # A bad base scenario (or --seed) is reported on its own: check against the defaults.
        base = P.counter_names((scn or Scenario()).config)
        kinds = {n.rpartition(".")[0] for n in base if n.rpartition(".")[2] in catalogue.BY_NAME}
        known = {*base, *(f"{k}.{r}" for k in kinds for r in catalogue.BY_NAME)}
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        problems.append(("-e", f"unknown counter {', '.join(unknown) or repr(args.counters)}; "
                               "allowed: the table's counter names, e.g. canceled_vmenters, "
                               "nmis_dropped, ns.guest, requests.NMI, cancels.backedge.NMI"))
    return names


def _plot_checks(args, plan, problems) -> None:
    if not args.plot:
        if args.heatmap:
            problems.append(("--heatmap", "draws with --plot FILE.png; give --plot"))
        return
    from .._sweep.table import plot_problems
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        problems.append(("--plot", f"cannot write {args.plot}: no such directory"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        problems.append(("--plot", "needs matplotlib: pip install 'kvmsim[plot]'"))
    if plan:
        varying = [k for k in plan.keys if len(set(plan.labels[k])) > 1]
        problems += [("--plot", m) for m in plot_problems(varying,
                                                          "heatmap" if args.heatmap else "lines")]


def _client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError([("--scheduler", "needs dask: pip install 'kvmsim[dask]'")]) from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError([("--scheduler", f"cannot connect to {address}: {e}")]) from None


def _fmt(v: float, digits: int) -> str:
    return "n/a" if math.isnan(v) else f"{v:.{digits}g}"


def _complete_points(table) -> int:
    """How many points have a row for every seed."""
    if not len(table):
        return 0
    counts = table.groupby("point").size()
    return int((counts == table.seeds).sum())


def print_summary(table, counters: list[str], duration: float, out) -> None:
    """Points whose every seed ran: the grid values, n, and per counter mean and +-95%."""
    s = table.summary(counters)
    s = s[s["n"] == table.seeds]
    head = [*table.grid_columns, "n"]
    for c in counters:
        head += [c, "+-95%"]
    rows = []
    for _, r in s.iterrows():
        row = [str(r[k]) for k in table.grid_columns] + [str(r["n"])]
        for c in counters:
            mean, low = r[f"{c}.mean"], r[f"{c}.low"]
            row += [_fmt(mean, 7), _fmt(mean - low, 3)]
        rows.append(row)
    width = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    left = len(table.grid_columns)

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, width))).rstrip()
    points = table["point"].nunique() if len(table) else 0
    print(f"# {len(s)} point{'s' * (len(s) != 1)} x {table.seeds} seed"
          f"{'s' * (table.seeds != 1)}, {duration:g} simulated s each; mean and 95% interval "
          "over seeds" + (f" ({points - len(s)} incomplete not shown)" if points > len(s)
                          else ""), file=out)
    print(line(head), file=out)
    for r in rows:
        print(line(r), file=out)


def cmd_sweep(args, out) -> int:
    problems = []
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ConfigError([("sweep", "needs pandas and dask: pip install 'kvmsim[dask]'")]) \
            from None
    scn = _base(args, problems)
    grid = _grid(args.grid, problems)
    plan = None
    if scn is not None:
        try:
            plan = P.plan(scn, grid, args.seeds, args.duration)
        except ConfigError as e:
            for p, m in e.problems:
                if p in grid and m.startswith("unknown field"):    # the grid's path
                    problems.append((p, m + GRID_HINTS.get(p, "")))
                else:
                    problems.append(({"seeds": "--seeds", "duration": "--duration"}.get(p, p),
                                     m))
    counters = _counters(args, scn, plan, problems)
    _plot_checks(args, plan, problems)
    store, rows = None, []
    if args.out:
        try:
            store = open_store(args.out)
            rows = store.load()
        except ConfigError as e:
            problems += [("--out", m) for _, m in e.problems]
    if problems:
        raise ConfigError(problems)
    done = S.done_runs(plan, rows)
    if done:
        print(f"kvmsim sweep: {len(done)} of {len(plan.runs)} runs already in {args.out}; "
              f"running the other {len(plan.runs) - len(done)}", file=sys.stderr)
    client = _client(args.scheduler) if args.scheduler else None
    try:
        table = S.execute(plan, done, store, client,
                          progress=not args.no_progress and sys.stderr.isatty())
    except S.SweepInterrupted as e:
        if _complete_points(e.table):
            print_summary(e.table, counters, plan.duration, out)
        else:                       # an empty table would say nothing of what was kept
            where = (f" in {args.out}; run the same command to resume" if args.out else
                     "; none kept: give --out FILE to keep runs and resume")
            print(f"# no point has all its seeds yet: {len(e.table)} of {len(plan.runs)} "
                  f"runs{where}", file=out)
        kept = f"; they are in {args.out}: run the same command to resume" if args.out else ""
        print(f"kvmsim sweep: interrupted after {len(e.table)} of {len(plan.runs)} runs{kept}",
              file=sys.stderr)
        return 130
    except S.SweepFailed as e:
        print(f"kvmsim sweep: error: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        raise ConfigError([("--scheduler" if p == "client" else p, m)
                           for p, m in e.problems]) from None
    finally:
        if client is not None:
            client.close()
    print_summary(table, counters, plan.duration, out)
    if args.plot:
        _save_plot(table, counters[0], "heatmap" if args.heatmap else "lines", args.plot)
    return 0


def _save_plot(table, counter: str, kind: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ax = table.plot(counter, kind)
    try:
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    except OSError as e:
        raise ConfigError([("--plot", f"cannot write {path}: {e.strerror}")]) from None
    finally:
        plt.close(ax.figure)
