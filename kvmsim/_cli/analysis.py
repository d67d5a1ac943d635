"""The order analysis commands (docs/analysis.md): lint-order, optimize and what-if."""

from __future__ import annotations

from .. import analysis, catalogue, graph
from .._config import Config, resolve_order
from .._errors import ConfigError
from .._scenario import Scenario
from .._simulation import simulate
from .._workload import Workload
from . import _args
from .compare import is_scenario

EPILOG = {
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


def add(sub) -> None:
    lint = sub.add_parser("lint-order", help="report the back edges of a check order "
                          "(exit 1 if one fires)", epilog=EPILOG["lint-order"],
                          formatter_class=_args.Formatter)
    lint.add_argument("target", metavar="ORDER", help="a preset, NAME,...,EVENT, a scenario "
                                                      "file, or a kernel tree / x86.c")
    lint.add_argument("--lvtpc", choices=graph.LVTPC_MODES,
                      help="the guest's LVTPC delivery mode (default: the workload's, or nmi)")
    _args.add_run_flags(lint, duration=10.0, interval=False, order_flags=(), helps={
        "workload": f"measure each firing back edge on this workload preset: "
                    f"{', '.join(_args.WORKLOADS)} (default: lint only)"})
    lint.set_defaults(func=lint_order)
    for name, help_, flags, func in (
            ("optimize", "the nearest order without avoidable back edges, and its gain",
             ("--from", "--order"), optimize),
            ("what-if", "cancelled VM-Enters per second by request and path", ("--order",),
             what_if)):
        p = sub.add_parser(name, help=help_, epilog=EPILOG[name], formatter_class=_args.Formatter)
        _args.add_run_flags(p, duration=10.0, interval=False, order_flags=flags)
        p.set_defaults(func=func, order_flag=flags[0])


def _run(args, problems: list) -> tuple[str, Scenario | None, bool]:
    """(label, the run, whether it has a workload to measure) that the ORDER (a profile,
    list, scenario file or kernel source) and the run flags describe; the run is None when
    they have problems (appended)."""
    if is_scenario(args.target):
        return args.target, _args.scenario(args, problems, path=args.target), True
    try:
        order = _args.order_value(args.target)
        label = args.target if isinstance(order, str) else "order"
        resolve_order(order)
    except ConfigError as e:
        raise ConfigError([("ORDER", m) for _, m in e.problems]) from None
    except ValueError as e:
        raise ConfigError([("ORDER", str(e))]) from None
    base = Scenario(config=Config(order=order, workload=Workload()),
                    duration=args.default_duration)
    return label, _args.scenario(args, problems, base=base), args.workload is not None


def lint_order(args, out) -> int:
    problems = []
    label, scn, has_workload = _run(args, problems)
    if problems:
        raise ConfigError(problems)
    config = scn.config
    order = config.check_order
    ctx = graph.Context.of(config)
    if args.lvtpc:
        ctx = graph.Context(lvtpc=args.lvtpc, apicv=ctx.apicv)
    edges = analysis.back_edges(order, ctx)
    measured = None
    if has_workload and any(b.active for b in edges):
        # Measure in the context linted: --lvtpc overrides the workload's mode.
        workload = config.workload.model_copy(update={"lvtpc": ctx.lvtpc})
        res = simulate(config.model_copy(update={"workload": workload}),
                       duration=scn.duration, keep=())
        measured = (res, args.workload or label)
    print(f"# {label}: {len(order)} checks; LVTPC delivery mode {ctx.lvtpc.upper()}, "
          f"{config.vendor}, APICv {'on' if ctx.apicv else 'off'}", file=out)
    for b in edges:
        e = b.edge
        state = "FIRES" if b.active else "conditional"
        print(f"back edge {e.src} -> {e.dst}: check #{b.src_pos} raises #{b.dst_pos} "
              f"(bits {catalogue.bit_of(e.src)} -> {catalogue.bit_of(e.dst)})  {state}",
              file=out)
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


def _config(args) -> tuple[Config, float]:
    problems = []
    scn = _args.scenario(args, problems, order_flag=args.order_flag)
    if problems:
        raise ConfigError(problems)
    return scn.config, scn.duration


def optimize(args, out) -> int:
    before, duration = _config(args)
    ctx = graph.Context.of(before)
    try:
        order, moves = analysis.optimize(before.check_order, ctx)
    except ValueError as e:
        raise ConfigError([(args.order_flag, str(e))]) from None
    label = before.order_name
    workload = args.workload or _args.DEFAULT_WORKLOAD
    print(f"# {label} for {workload} (LVTPC delivery mode {ctx.lvtpc.upper()}, "
          f"{before.vendor})", file=out)
    if not moves:
        print(f"{label} has no avoidable back edge for this workload", file=out)
        return 0
    for m in moves:
        print(f"move {m.name}: check #{m.old_pos} -> #{m.new_pos}, after {m.after}", file=out)
    print(f"order: {','.join(order)}", file=out)
    after = before.model_copy(update={"order": list(order)})
    rates = [simulate(c, duration=duration, keep=()).totals["canceled_vmenters"] / duration
             for c in (before, after)]
    print(f"{'':<12}{'cancelled VM-Enters/s':>24}", file=out)
    print(f"{label:<12}{rates[0]:>24,.1f}", file=out)
    print(f"{'optimized':<12}{rates[1]:>24,.1f}", file=out)
    saved = rates[0] - rates[1]
    share = f" ({saved / rates[0]:.1%})" if rates[0] else ""
    print(f"{'saved':<12}{saved:>24,.1f}{share}", file=out)
    return 0


def what_if(args, out) -> int:
    cfg, duration = _config(args)
    res = simulate(cfg, duration=duration, keep=())
    rows = {r.request: r for r in analysis.what_if(res)}
    raised = cfg.workload.raised_requests()
    workload = args.workload or _args.DEFAULT_WORKLOAD
    print(f"# {workload}, {cfg.order_name}, {duration:g} s: cancelled VM-Enters per second "
          "by the request pending at kvm_vcpu_exit_request()", file=out)
    print(f"{'request':<26}{'arrived late':>14}{'back edge':>12}  raised by", file=out)
    for n in cfg.check_order:
        r = rows.get(n)
        if r is None and catalogue.canonical(n) not in raised:
            continue
        a, b = (r.async_per_s, r.backedge_per_s) if r else (0.0, 0.0)
        by = ", ".join(r.raised_by) if r and r.raised_by else ""
        print(f"{n:<26}{a:>14,.1f}{b:>12,.1f}  {by}", file=out)
    total = res.totals["canceled_vmenters"] / res.duration
    print(f"cancelled VM-Enters/s: {total:,.1f} in all (a cancel with two requests pending "
          "is listed under both above)", file=out)
    return 0
