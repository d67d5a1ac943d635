"""What every command shares: the run flags, reading a scenario from a file and flags, and
the one mapping from a bad field to the flag that set it."""

from __future__ import annotations

import argparse
import os

from .. import _names, _orders
from .._config import Config
from .._errors import ConfigError
from .._limits import MAX_SECONDS, to_ns
from .._scenario import Scenario
from .._source_order import order_from_source
from .._workload import PRESETS as WORKLOADS

Formatter = argparse.RawDescriptionHelpFormatter
DEFAULT_ORDER = Config.model_fields["order"].default
DEFAULT_WORKLOAD = Config.model_fields["workload"].default
# Config fields a flag of the same name sets; --vcpus sets workload.vcpus, -I the interval.
CONFIG_FLAGS = ("order", "workload", "seed", "engine", "vendor")


def add_run_flags(p: argparse.ArgumentParser, duration: float, interval: bool = True,
                  order_flags: tuple[str, ...] = ("--order",)) -> None:
    """Flags that describe a run; each overrides a scenario file (None: not given)."""
    p.add_argument(*order_flags, dest="order", metavar="ORDER",
                   help=f"check order: {', '.join(_orders.PRESETS)}, NAME,NAME,...,EVENT, or "
                        f"a kernel tree / x86.c to read it from (default {DEFAULT_ORDER})")
    p.add_argument("--workload", help=f"workload preset: {', '.join(WORKLOADS)} "
                                      f"(default {DEFAULT_WORKLOAD})")
    p.add_argument("--vcpus", type=int, help="number of vCPUs (overrides the workload's)")
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help=f"simulated seconds (default {duration:g})")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--engine", help="cython (default) or python: the same counts")
    p.add_argument("--vendor", help="intel (default) or amd")
    if interval:
        p.add_argument("-I", "--interval-print", dest="interval", type=float, metavar="MSEC",
                       help="print counts every MSEC milliseconds (default 10000)")
    p.set_defaults(default_duration=duration)


def order_value(text: str) -> str | list[str]:
    """A preset name, NAME,NAME,...,EVENT, or a kernel tree / x86.c to read the order from."""
    text = text.strip()
    if "," in text:
        return [n.strip() for n in text.split(",") if n.strip()]
    if text not in _orders.PRESETS and is_kernel_source(text):
        try:
            return list(order_from_source(text).names(known_only=True))
        except ValueError as e:
            raise ConfigError([("order", str(e))]) from None
    return text


def is_kernel_source(path: str) -> bool:
    """A kernel tree or a C file (x86.c): where an order can be read from."""
    return os.path.isdir(path) or (path.endswith(".c") and os.path.exists(path))


def flag_for(path: str, given: dict[str, str]) -> str:
    """The flag behind a bad field (config.workload.vcpus -> --vcpus), else the field."""
    key = path.removeprefix("config.")
    top = key.split(".")[0]
    if key == "workload.vcpus" and "vcpus" in given:
        return given["vcpus"]
    if top == "workload" and "vcpus" in given and "workload" not in given:
        return f"{given['vcpus']} ({key})"
    return given.get(top, path)


def scenario(args, problems: list, path: str | None = None, order: str | None = None,
             order_flag: str = "--order") -> Scenario | None:
    """The run a scenario file (or the defaults) and the flags describe. Problems, with the
    flag or file line that caused them, are appended to `problems`: None then."""
    path = path if path is not None else getattr(args, "scenario", None)
    try:
        base = Scenario.load(path) if path else Scenario(duration=args.default_duration)
    except ConfigError as e:
        problems += e.problems
        return None
    config = base.config.model_dump()
    given: dict[str, str] = {}
    bad = len(problems)
    order = order if order is not None else args.order
    if order is not None:
        given["order"] = order_flag
        try:
            config["order"] = order_value(order)
        except ConfigError as e:
            problems += [(order_flag, m) for _, m in e.problems]
    for name in CONFIG_FLAGS[1:]:
        if getattr(args, name, None) is not None:
            config[name], given[name] = getattr(args, name), f"--{name}"
    if args.vcpus is not None:
        workload = config["workload"]
        if isinstance(workload, str) and workload in WORKLOADS:
            workload = WORKLOADS[workload]().model_dump()
        if isinstance(workload, dict):
            config["workload"] = {**workload, "vcpus": args.vcpus}
        given["vcpus"] = "--vcpus"
    run = {"duration": base.duration, "interval": base.interval}
    if args.duration is not None:
        run["duration"], given["duration"] = args.duration, "--duration"
    ms = getattr(args, "interval", None)
    if ms is not None:
        try:
            to_ns(ms / 1000)
            run["interval"] = ms / 1000
        except ValueError:
            problems.append(("-I", f"{ms:g} ms; allowed: milliseconds in "
                                   f"1e-06..{MAX_SECONDS * 1000:g}, whole nanoseconds"))
    try:
        built = Scenario(config=config, **run)
    except ConfigError as e:
        problems += [(flag_for(p, given), m) for p, m in e.problems]
        return None
    return built if len(problems) == bad else None


def events(spec: str, problems: list, flag: str = "-e") -> list[str]:
    """`-e a,b,c` (any name of a counter) -> kvmsim counter names; problems appended."""
    wanted = [e.strip() for e in spec.split(",") if e.strip()] or [spec]
    out, bad = [], []
    for e in wanted:
        try:
            out.append(_names.counter(e))
        except KeyError:
            bad.append(e)
    if bad:
        problems.append((flag, f"unknown event {', '.join(map(repr, bad))}; allowed: "
                               f"{', '.join(_names.perf_names())}, or requests.<NAME> "
                               "(see --list-events)"))
    return out
