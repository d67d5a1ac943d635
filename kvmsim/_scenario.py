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

RUN_KEYS = ("duration", "interval")


class Scenario(Validated):
    """A whole run: a Config plus how long to simulate and how often to count."""

    config: Config = Field(default_factory=Config)
    duration: Seconds = Field(60.0, description="simulated seconds")
    interval: Seconds = Field(10.0, description="seconds per interval")

    @classmethod
    def from_toml(cls, text: str, source: str = "<string>") -> Scenario:
        """Parse a scenario; every problem is reported at once, with its line."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([(source, f"not valid TOML: {e}")]) from None
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
            raise ConfigError([(f"{source}:{lines[p]}: {p}" if p in lines else f"{source}: {p}",
                                msg) for p, msg in problems])
        return scenario

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario file; "-" reads standard input."""
        try:
            data = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
            text = data.decode("utf-8")
        except OSError as e:
            raise ConfigError([(str(path), f"cannot read scenario file: {e.strerror}")]) from None
        except UnicodeDecodeError as e:
            raise ConfigError([(str(path), f"not a scenario file: byte {e.start} is not "
                                           "UTF-8 (scenario files are TOML)")]) from None
        return cls.from_toml(text, source="<stdin>" if str(path) == "-" else str(path))

    def to_toml(self) -> str:
        config = self.config.model_dump(mode="json", exclude_none=True)
        data = {"duration": self.duration, "interval": self.interval,
                **{k: v for k, v in config.items() if v != {}}}   # no empty [host]
        return tomli_w.dumps(data)

    def run(self, keep=None) -> Result:
        return simulate(self.config, duration=self.duration, interval=self.interval, keep=keep)


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
