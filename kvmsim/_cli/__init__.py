"""The `kvmsim` command. Each command family is a module with add(subparsers); errors from
bad input become one line per problem on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .._errors import ConfigError
from . import analysis, compare, host, orders, stat, sweep, trace

COMMANDS = (stat, compare, trace, orders, analysis, sweep, host)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # The subcommand's usage line, then the error, as argparse does: exit status 2.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="kvmsim", description="Simulate KVM x86's VM-Enter path "
                  "(vcpu_enter_guest): request checks, NMI/PMI injection, cancelled VM-Enters.")
    top.add_argument("--version", action="version", version=f"kvmsim {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser,
                             metavar="COMMAND")
    for module in COMMANDS:
        module.add(sub)
    for name, p in sub.choices.items():
        p.set_defaults(parser=p)
    return top


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    if extra:             # named by the command they were given to, with its usage
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, sys.stdout)
    except ConfigError as e:
        for path, msg in e.problems:
            print(f"kvmsim {args.command}: error: {path + ': ' if path else ''}{msg}",
                  file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kvmsim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
