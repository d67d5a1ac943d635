"""kvmsim orders (also `order`): the kernel profiles, one with bit numbers and switches, the
profile x switch table, or an order read from a kernel's x86.c."""

from __future__ import annotations

from .. import catalogue, profiles
from .._config import resolve_order
from .._errors import ConfigError
from .._source_order import order_from_source
from . import _args

HELP = ("list the kernel profiles, print one with bit numbers, tabulate their behaviour, or "
        "read an order from a kernel's x86.c")
EPILOG = """examples:
  kvmsim orders                                   # the profiles
  kvmsim orders linux-6.6                         # one profile: checks with bits, switches
  kvmsim orders --profiles                        # profile x behaviour switch
  kvmsim orders --citations                       # the commit behind each switch value
  kvmsim order --from-source ~/linux              # read vcpu_enter_guest() of a tree
"""


def add(sub) -> None:
    p = sub.add_parser("orders", aliases=["order"], help=HELP, epilog=EPILOG,
                       formatter_class=_args.Formatter)
    p.add_argument("name", nargs="?", help="a profile or NAME,NAME,...,EVENT")
    p.add_argument("--profiles", action="store_true",
                   help="the profiles as a table: release x behaviour switch")
    p.add_argument("--citations", action="store_true",
                   help="each switch value with its commit, first release and where verified")
    p.add_argument("--from-source", metavar="PATH",
                   help="a kernel tree or its arch/x86/kvm/x86.c")
    p.set_defaults(func=run)


def run(args, out) -> int:
    if args.from_source:
        return from_source(args.from_source, out)
    if args.name is None and (args.profiles or args.citations):
        if args.profiles:
            _print_table(profiles.table(), out)
        if args.profiles and args.citations:
            print(file=out)
        if args.citations:
            _print_table(profiles.citations(), out)
        return 0
    profile = profiles.PROFILES.get(args.name.strip()) if args.name else None
    if args.name is not None and (args.profiles or args.citations) and profile is None:
        flag = "--citations" if args.citations else "--profiles"
        raise ConfigError([(flag, f"with a name, the name is a profile; {args.name!r} is "
                                  "not: allowed: a profile from `kvmsim orders`")])
    if args.name is None:
        for p in profiles.PROFILES.values():
            middle = ", ".join(n for n in p.order if n in ("SMI", "NMI", "PMU", "PMI"))
            print(f"{p.name:<14} {p.release:<10} {len(p.order)} checks: ... {middle} ...",
                  file=out)
        return 0
    try:
        checks = resolve_order(_args.order_value(args.name))
    except ValueError as e:
        raise ConfigError([("order", str(e))]) from None
    for i, name in enumerate(checks):
        print(f"{i:>3} {name:<30} bit {catalogue.bit_of(name):>2}", file=out)
    if profile is not None:
        print(f"# {profile.name}: {profile.tree}", file=out)
        for switch, value in profile.behaviour.items():
            print(f"# {switch} = {value}", file=out)
        if args.profiles:
            print(file=out)
            _print_table([row for i, row in enumerate(profiles.table())
                          if i == 0 or row[0] == profile.name], out)
        if args.citations:
            print(file=out)
            _print_table(_citations_in_force(profile), out)
    return 0


def _citations_in_force(profile) -> list[list[str]]:
    """The citation rows of the switch values `profile` has (a value that no commit brought,
    the original behaviour, has none)."""
    rows = profiles.citations()
    return [rows[0]] + [r for r in rows[1:]
                        if str(profile.behaviour.get(r[0], object())) == r[1]]


def _print_table(rows: list[list[str]], out) -> None:
    """Columns padded to their widest cell; the last column is left ragged."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip(), file=out)


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
