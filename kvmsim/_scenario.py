"""Scenario files: a whole run (Config plus duration and interval) as TOML.

    order = "linux-6.6"            # or a list of request names ending with "EVENT"
    seed = 1
    duration = 60.0                # simulated seconds
    interval = 10.0
    [workload]                     # or: workload = "spec2017-vtune"
    vcpus = 8
    [[workload.sources]]
    type = "poisson"               # poisson, periodic or trace
    kind = "pmi"
    rate = 187.0
    [costs.handlers]
    PMU = 800
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import tomli_w
from pydantic import Field

from ._config import Config
from ._errors import ConfigError
from ._limits import Seconds
from ._result import Result
from ._simulation import simulate
from ._validated import Validated
from ._workload import PRESETS, preset

RUN_KEYS = ("duration", "interval")


class Scenario(Validated):
    """A whole run: a Config plus how long to simulate and how often to count."""

    config: Config = Field(default_factory=Config)
    duration: Seconds = Field(60.0, description="simulated seconds")
    interval: Seconds = Field(10.0, description="seconds per interval")

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>",
                  overrides: dict | None = None) -> Scenario:
        """Parse a scenario; every problem is reported at once, with its line.

        `overrides` (fields as in the file, e.g. {"workload": {"vcpus": 8}}) replace the
        file's before anything is checked, as command-line flags do: a table's keys are
        merged into the file's table (a workload preset name is expanded first), any other
        value replaces the file's. A problem at an overridden field is reported without the
        file's name and line (the caller knows which flag gave it)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([(source, f"not valid TOML: {e}")]) from None
        given = _override(data, overrides or {})
        run = {k: data.pop(k) for k in RUN_KEYS if k in data}
        problems = []
        try:
            config = Config(**data)
        except ConfigError as e:
            problems += e.problems
            config = None
        try:
            scenario = cls(**run, **({"config": config} if config else {}))
        except ConfigError as e:
            problems += e.problems
        if problems:
            lines = _key_lines(text)
            raise ConfigError([(p if _given(p, given) else f"{source}:{lines[p]}: {p}"
                                if p in lines else f"{source}: {p}", msg)
                               for p, msg in problems])
        return scenario

    @classmethod
    def load(cls, path: str | Path, overrides: dict | None = None) -> Scenario:
        """Read a scenario file; "-" reads standard input. `overrides`: see from_toml."""
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
            text = data.decode("utf-8")
        except OSError as e:
            raise ConfigError([(str(path), f"cannot read scenario file: {e.strerror}")]) from None
        except UnicodeDecodeError as e:
            raise ConfigError([(str(path), f"not a scenario file: byte {e.start} is not "
                                           "UTF-8 (scenario files are TOML)")]) from None
        return cls.from_toml(text, source="<stdin>" if str(path) == "-" else str(path),
                             overrides=overrides)

    def to_toml(self) -> str:
        config = self.config.model_dump(mode="json", exclude_none=True)
        data = {"duration": self.duration, "interval": self.interval,
                **{k: v for k, v in config.items() if v != {}}}   # no empty [host]
        return tomli_w.dumps(data)

    def run(self, keep=None) -> Result:
        return simulate(self.config, duration=self.duration, interval=self.interval, keep=keep)


def _override(data: dict, overrides: dict) -> set[str]:
    """Apply `overrides` to the file's `data`; the field paths they set."""
    given = set()
    for key, value in overrides.items():
        if isinstance(value, dict):
            table = data.get(key, {})
            if key == "workload" and isinstance(table, str) and table in PRESETS:
                table = preset(table).model_dump()
            if isinstance(table, dict):
                data[key] = {**table, **value}
                given |= {f"{key}.{k}" for k in value}
                continue
        data[key] = value
        given.add(key)
    return given


def _given(path: str, given: set[str]) -> bool:
    return any(path == g or path.startswith(g + ".") for g in given)


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Field path (as ConfigError reports it, e.g. workload.sources.1.rate) -> line number."""
    lines, table, counts = {}, "", {}
    for n, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE.match(line):
            table = m[1].replace(" ", "")
            if line.lstrip().startswith("[["):
                counts[table] = counts.get(table, -1) + 1
                table = f"{table}.{counts[table]}"
            lines.setdefault(table, n)
        elif m := _KEY.match(line):
            key = m[1].strip("\"'")
            lines.setdefault(f"{table}.{key}" if table else key, n)
    return lines
