"""What every command shares: the run flags, reading a scenario from a file and flags, and
the one mapping from a bad field to the flag that set it."""

from __future__ import annotations

import argparse
import math
import os

from .. import _names, _spec, profiles
from .._config import Config, Host
from .._errors import ConfigError
from .._limits import MAX_SECONDS, NS, to_ns
from .._scenario import Scenario
from .._source_order import order_from_source
from .._workload import PRESETS as WORKLOADS

Formatter = argparse.RawDescriptionHelpFormatter
DEFAULT_ORDER = Config.model_fields["order"].default
DEFAULT_WORKLOAD = Config.model_fields["workload"].default
# Config fields a flag of the same name sets; --vcpus sets workload.vcpus, -I the interval.
CONFIG_FLAGS = ("order", "workload", "seed", "engine", "vendor", "threads")
_ON, _OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def onoff(text: str) -> bool | None:
    return True if text.lower() in _ON else False if text.lower() in _OFF else None


def integer(lo: int | None = None, hi: int | None = None):
    """An argparse type: an int, whose error names the value and what is allowed (the range
    is checked where the value is used, with the other problems)."""
    allowed = ("an int" + (f" in {lo}..{hi}" if hi is not None else
                           f", at least {lo}" if lo is not None else ""))

    def parse(text: str) -> int:
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}; allowed: {allowed}") from None
    parse.__name__ = allowed
    return parse


def number(allowed: str):
    """An argparse type: a finite or infinite float (checked where used), whose error names
    the value and what is allowed."""
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}; allowed: {allowed}") from None
    parse.__name__ = allowed
    return parse


SECONDS = number(f"a number of seconds in 1e-09..{MAX_SECONDS:g}")


def separator(text: str) -> str:
    """-x SEP: one or more characters (perf takes any string); empty would run fields together."""
    if not text:
        raise argparse.ArgumentTypeError("'': an empty separator runs the fields together; "
                                         "allowed: one or more characters, e.g. -x, or "
                                         "-x '\\t'")
    return text


def pairs(text: str, flag: str, problems: list, value=lambda key, v: v) -> dict:
    """`KEY=VALUE,KEY=VALUE` -> {KEY: value(KEY, VALUE)}; value returns None for a bad one,
    which is reported with the values `allowed` gives for its key. A key given twice is
    refused."""
    out, bad, twice = {}, [], []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        key, eq, raw = (x.strip() for x in item.partition("="))
        if not (eq and key):
            bad.append(item)
        elif key in out or key in twice:
            twice.append(key)
        else:
            parsed = value(key, raw)
            out[key] = parsed
            if parsed is None:
                problems.append((flag, f"{key} = {raw!r}; allowed: {_allowed(flag, key)}"))
    for key in dict.fromkeys(twice):
        problems.append((flag, f"{key} given twice; give each key once"))
    if bad or not (out or twice):
        problems.append((flag, f"{', '.join(map(repr, bad)) or repr(text)}: expected "
                               "KEY=VALUE[,KEY=VALUE...]" + (
                                   "; values on or off" if flag == "--host" else "")))
    return {k: v for k, v in out.items() if v is not None}


def _allowed(flag: str, key: str) -> str:
    """The values a --host feature or --behaviour switch takes, as text."""
    switch = profiles.SWITCH.get(key) if flag == "--behaviour" else None
    if switch is not None and not isinstance(switch.values[0], bool):
        return ", ".join(map(repr, switch.values))
    return "on, off"


def _switch_value(key: str, raw: str):
    """A behaviour switch's value from text: on/off for the True/False switches."""
    switch = profiles.SWITCH.get(key)
    if switch is not None and isinstance(switch.values[0], bool):
        return onoff(raw)
    return raw


def _workload_dict(config: dict):
    """The config's workload as a dict a flag can change (a preset name is expanded)."""
    workload = config["workload"]
    if isinstance(workload, str) and workload in WORKLOADS:
        workload = WORKLOADS[workload]().model_dump()
    return workload


def add_run_flags(p: argparse.ArgumentParser, duration: float | None = None,
                  interval: bool = True, order_flags: tuple[str, ...] = ("--order",),
                  only: tuple[str, ...] | None = None,
                  helps: dict[str, str] | None = None) -> None:
    """Flags that describe a run; each overrides a scenario file (None: not given). No
    `order_flags`: the command takes the order otherwise. `only`: just the flags with these
    dest names (a command that builds its runs itself, such as host-check's --engine).
    `helps`: a command's own help text of a flag, by dest name."""
    def flag(dest: str, /, *names: str, **kwargs) -> None:
        if names and (only is None or dest in only):
            p.add_argument(*names, **{**kwargs, "help": (helps or {}).get(dest, kwargs["help"])})
    flag("order", *order_flags, dest="order", metavar="ORDER",
         help=f"kernel profile (`kvmsim orders --profiles`), NAME,NAME,...,EVENT, or a kernel "
              f"tree / x86.c to read the order from (default {DEFAULT_ORDER})")
    flag("workload", "--workload", help=f"workload preset: {', '.join(WORKLOADS)} "
                                        f"(default {DEFAULT_WORKLOAD})")
    flag("vcpus", "--vcpus", type=integer(1, 4096),
         help="number of vCPUs (overrides the workload's)")
    flag("duration", "--duration", type=SECONDS, metavar="SECONDS",
         help=f"simulated seconds (default {duration:g})" if duration is not None else None)
    flag("seed", "--seed", type=integer(0), help="random seed (default 0)")
    flag("engine", "--engine", help="cython (default) or python: the same counts")
    flag("vendor", "--vendor", help="intel (default) or amd")
    flag("threads", "--threads", type=integer(1, 1024), metavar="N",
         help="threads to run independent vCPUs in (default: one per core; the counts do "
              "not change)")
    flag("host", "--host", metavar="FEATURE=on|off,...",
         help=f"host features: {', '.join(Host.model_fields)} (default: what the vendor's "
              "current CPU and the profile's KVM give)")
    flag("behaviour", "--behaviour", metavar="SWITCH=VALUE,...",
         help="override the profile's behaviour switches (`kvmsim orders --profiles`): " +
              ", ".join(profiles.SWITCH))
    flag("guest_pmu", "--guest-pmu", choices=tuple(_spec.GUEST_PMU_OF),
         help="the guest's perf PMI handler (default: the vendor's)")
    if interval:
        flag("interval", "-I", "--interval-print", dest="interval",
             type=number(f"milliseconds in 1e-06..{MAX_SECONDS * 1000:g}, whole nanoseconds"),
             metavar="MSEC", help="print counts every MSEC milliseconds (default 10000)")
    if duration is not None:
        p.set_defaults(default_duration=duration)


def order_value(text: str) -> str | list[str]:
    """A preset name, NAME,NAME,...,EVENT, or a kernel tree / x86.c to read the order from."""
    text = text.strip()
    if "," in text:
        return [n.strip() for n in text.split(",") if n.strip()]
    if text not in profiles.PROFILES and is_kernel_source(text):
        try:
            return list(order_from_source(text).names(known_only=True))
        except ValueError as e:
            raise ConfigError([("order", str(e))]) from None
    if text not in profiles.PROFILES and looks_like_path(text) and not os.path.exists(text):
        raise ConfigError([("order", f"cannot read {text!r}: no such file or directory; "
                                     "allowed: a scenario file, kernel tree or x86.c that "
                                     "exists, or an order (`kvmsim orders`)")])
    return text


def looks_like_path(text: str) -> bool:
    """A name meant as a file: it ends in .toml or .c, or has a path separator."""
    return (text.endswith((".toml", ".c")) or os.sep in text
            or (os.altsep is not None and os.altsep in text))


def is_kernel_source(path: str) -> bool:
    """A kernel tree or a C file (x86.c): where an order can be read from."""
    return os.path.isdir(path) or (path.endswith(".c") and os.path.exists(path))


def flag_for(path: str, given: dict[str, str]) -> str:
    """The flag behind a bad field (config.workload.vcpus -> --vcpus), else the field."""
    key = path.removeprefix("config.")
    top = key.split(".")[0]
    for field in ("vcpus", "guest_pmu"):
        if key == f"workload.{field}" and field in given:
            return given[field]
    if top == "workload" and "vcpus" in given and "workload" not in given:
        return f"{given['vcpus']} ({key})"
    if top in ("host", "behaviour") and top in given and "." in key:
        return f"{given[top]} {key.split('.', 1)[1]}"
    return given.get(top, path)


def _config_flags(args, config: dict, given: dict[str, str]) -> None:
    """Set the Config fields that flags of the same name give (but --order) in `config`,
    and the flag of each in `given`."""
    for name in CONFIG_FLAGS[1:]:
        if getattr(args, name, None) is not None:
            config[name], given[name] = getattr(args, name), f"--{name}"


WORKLOAD_FLAGS = ("vcpus", "guest_pmu")     # --vcpus and --guest-pmu set the workload's
# The flags a scenario file is checked with (--order and --workload come after it).
_FLAG_OF = {name: "--" + name.replace("_", "-") for name in (*CONFIG_FLAGS[2:], *WORKLOAD_FLAGS)}


def _file_overrides(args) -> dict:
    """The flags' values a scenario file is checked with: flags override the file."""
    given = {name: getattr(args, name) for name in _FLAG_OF
             if getattr(args, name, None) is not None}
    workload = {name: given.pop(name) for name in WORKLOAD_FLAGS if name in given}
    return {**given, "workload": workload} if workload else given


def scenario(args, problems: list, path: str | None = None, order: str | None = None,
             order_flag: str = "--order", base: Scenario | None = None) -> Scenario | None:
    """The run a scenario file (or `base`, or the defaults) and the flags describe. Problems,
    with the flag or file line that caused them, are appended to `problems`: None then."""
    path = path if path is not None else getattr(args, "scenario", None)
    try:
        if base is None:
            base = Scenario.load(path, overrides=_file_overrides(args)) if path else \
                Scenario(duration=args.default_duration)
    except ConfigError as e:
        given = {k: flag for k, flag in _FLAG_OF.items() if getattr(args, k, None) is not None}
        problems += [(flag_for(p, given), m) for p, m in e.problems]
        return None
    config = base.config.model_dump()
    given: dict[str, str] = {}
    bad = len(problems)
    order = order if order is not None else getattr(args, "order", None)
    if order is not None:
        given["order"] = order_flag
        try:
            config["order"] = order_value(order)
        except ConfigError as e:
            problems += [(order_flag, m) for _, m in e.problems]
    _config_flags(args, config, given)
    if getattr(args, "host", None) is not None:
        flags = pairs(args.host, "--host", problems, lambda k, v: onoff(v))
        config["host"], given["host"] = {**config["host"], **flags}, "--host"
    if getattr(args, "behaviour", None) is not None:
        flags = pairs(args.behaviour, "--behaviour", problems, _switch_value)
        config["behaviour"], given["behaviour"] = {**config["behaviour"], **flags}, "--behaviour"
    for field in WORKLOAD_FLAGS:
        flag, value = _FLAG_OF[field], getattr(args, field, None)
        if value is not None:
            workload = _workload_dict(config)
            if isinstance(workload, dict):
                config["workload"] = {**workload, field: value}
            given[field] = flag
    run = {"duration": base.duration, "interval": base.interval}
    if args.duration is not None:
        run["duration"], given["duration"] = args.duration, "--duration"
    ms = getattr(args, "interval", None)
    if ms is not None:
        try:
            # Whole nanoseconds counted from the milliseconds given: ms / 1000 in float is
            # not always what to_ns takes (1e-06 ms gives 9.999999999999999e-10 s).
            ns = ms * 1e6
            if not math.isfinite(ns) or abs(ns - round(ns)) > max(1e-6, 1e-15 * abs(ns)):
                raise ValueError(ms)
            to_ns(round(ns) / NS)
            run["interval"] = round(ns) / NS
        except ValueError:
            problems.append(("-I", f"{ms:g} ms; allowed: milliseconds in "
                                   f"1e-06..{MAX_SECONDS * 1000:g}, whole nanoseconds"))
    try:
        built = Scenario(config=config, **run)
    except ConfigError as e:
        problems += [(flag_for(p, given), m) for p, m in e.problems]
        return None
    return built if len(problems) == bad else None


def config(args, problems: list) -> Config | None:
    """The default Config with the fields that flags of the same name give (but --order),
    for a command that builds its runs itself (host-check's --engine). Problems, with their
    flags, are appended to `problems`: None then."""
    fields: dict = {}
    given: dict[str, str] = {}
    _config_flags(args, fields, given)
    try:
        return Config(**fields)
    except ConfigError as e:
        problems += [(flag_for(p, given), m) for p, m in e.problems]
        return None


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
