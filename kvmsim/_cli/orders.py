"""kvmsim orders (also `order`): the presets, one with bit numbers, or an order read from a
kernel's x86.c."""

from __future__ import annotations

from .. import _orders, catalogue
from .._config import resolve_order
from .._errors import ConfigError
from .._source_order import order_from_source
from . import _args

HELP = "list the order presets, print one with bit numbers, or read one from a kernel's x86.c"
EPILOG = """examples:
  kvmsim orders                                   # the presets
  kvmsim orders linux-6.6                         # one preset, with bit numbers
  kvmsim order --from-source ~/linux              # read vcpu_enter_guest() of a tree
"""


def add(sub) -> None:
    p = sub.add_parser("orders", aliases=["order"], help=HELP, epilog=EPILOG,
                       formatter_class=_args.Formatter)
    p.add_argument("name", nargs="?", help="a preset or NAME,NAME,...,EVENT")
    p.add_argument("--from-source", metavar="PATH",
                   help="a kernel tree or its arch/x86/kvm/x86.c")
    p.set_defaults(func=run)


def run(args, out) -> int:
    if args.from_source:
        return from_source(args.from_source, out)
    if args.name is None:
        for name, checks in _orders.PRESETS.items():
            print(f"{name:<12} {len(checks)} checks: ... {', '.join(checks[17:22])} ...",
                  file=out)
        return 0
    try:
        checks = resolve_order(_args.order_value(args.name))
    except ValueError as e:
        raise ConfigError([("order", str(e))]) from None
    for i, name in enumerate(checks):
        print(f"{i:>3} {name:<30} bit {catalogue.bit_of(name):>2}", file=out)
    return 0


def from_source(path: str, out) -> int:
    try:
        so = order_from_source(path)
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
