"""The plan of a sweep: every point of the grid x seeds as a validated Config, with the key
that identifies its run in a file. Nothing runs here; every problem is found at once.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass

import numpy as np

from .._config import Config
from .._errors import ConfigError
from .. import _names
from .._scenario import Scenario
from .. import _version

from . import grid as G


@dataclass(frozen=True)
class Run:
    key: str              # hash of the run: config with its seed, duration, kvmsim model
    point: int
    seed_index: int
    seed: int
    config: dict          # Config.model_dump() with the seed set


@dataclass(frozen=True)
class Plan:
    keys: list[str]                 # grid paths, in the order given
    labels: dict[str, list]         # grid path -> the table cell of each point
    runs: list[Run]                 # point-major, then seed index
    counters: list[str]
    seeds: int
    duration: float


def seed_ints(base_seed: int, n: int) -> list[int]:
    """Config.seed of seed index 0..n-1: SeedSequence(base_seed).spawn(n), one 32-bit word
    each. Child i does not depend on n, so adding seeds keeps the runs already done."""
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(base_seed).spawn(n)]


# Fields that change how a run is computed, never its counts.
NOT_IN_KEY = {"threads", "engine"}


def _run_key(cfg: Config, duration: float) -> str:
    text = json.dumps({"kvmsim": _version.model(), "duration": duration,
                       "config": cfg.model_dump(mode="json", exclude=NOT_IN_KEY)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def counter_names(cfg: Config) -> list[str]:
    """Result.totals' keys for this config's order."""
    return [*_names.for_order(cfg.check_order), "nmis_outstanding"]


def _union(names: list[list[str]]) -> list[str]:
    """Counters of every order in the grid, each kind together (requests.*, cancels.async.*,
    ...) in the order the first config lists them."""
    seen = list(dict.fromkeys(n for ns in names for n in ns))
    kinds = list(dict.fromkeys(n.rpartition(".")[0] or n for n in seen))
    return sorted(seen, key=lambda n: kinds.index(n.rpartition(".")[0] or n))


def _base(base) -> tuple[Config, float | None]:
    if isinstance(base, Scenario):
        return base.config, base.duration
    if isinstance(base, Config):
        return base, None
    raise ConfigError([("base", f"{type(base).__name__}; give a kvmsim.Config or a "
                                "kvmsim.Scenario")])


def _grid_values(grid, problems) -> dict[str, tuple[tuple[G.Part, ...], list]]:
    """Each grid key parsed as a path, its values checked: a non-empty list, no repeats."""
    if not isinstance(grid, dict):
        problems.append(("grid", f"{type(grid).__name__}; give a dict of field path -> list "
                                 "of values"))
        return {}
    out = {}
    for key, values in grid.items():
        try:
            parts = G.parse_path(key)
        except G.PathError as e:
            problems.append((key, str(e)))
            continue
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
            problems.append((key, f"{values!r}; give a list of values"))
            continue
        values = list(values)
        cells = [json.dumps(G.label(v), sort_keys=True) for v in values]
        twice = sorted({c for c in cells if cells.count(c) > 1})
        if not values:
            problems.append((key, "no values; give at least one"))
        elif twice:
            problems.append((key, f"value {', '.join(twice)} given twice: every point "
                                  "runs once"))
        else:
            out[key] = (parts, values)
    return out


def _loc(parts) -> str:
    """A path as ConfigError spells it (workload.sources.0.rate)."""
    return ".".join(str(p) for p in parts)


def _at(node, parts):
    for p in parts:
        node = node[p]
    return node


def _point_config(base: dict, assigned: list, problems, shared: dict):
    """(Config, values) of a point: (key, parts, value) applied shallow paths first (a Text
    parsed by its field's type), then validated; (None, None) if bad. A problem is named by
    the grid key and value it comes from; one no key owns (a model's own check) goes to
    `shared` (problem -> points), as the same one often comes from many points."""
    data = copy.deepcopy(base)

    def expand(prefix):
        # The field's own validator expands the name. Try it in the base config first, so
        # that a bad value elsewhere in this point is reported once, as itself.
        alone = copy.deepcopy(base)
        try:
            _at(alone, prefix[:-1])[prefix[-1]] = _at(data, prefix)
        except (KeyError, IndexError, TypeError):
            alone = None
        for candidate in [c for c in (alone, data) if c is not None]:
            try:
                return _at(Config(**candidate).model_dump(), prefix)
            except ConfigError as e:
                error = e
        raise G.PathError(f"{G.show(prefix)} = {_at(data, prefix)!r} could not be expanded "
                          f"to set a field in it: {error}")

    parsed = {}
    for key, parts, value in sorted(assigned, key=lambda a: len(a[1])):
        try:
            node, field, ann = G.walk(Config, data, parts, expand)
            parsed[key] = G.parse_text(value, ann) if isinstance(value, G.Text) else value
        except (G.PathError, ValueError) as e:
            where = f"{key}={value}" if isinstance(value, G.Text) and \
                not isinstance(e, G.PathError) else key
            problems.append((where, str(e)))  # and check the other keys without this one
            continue
        node[field] = parsed[key]
    try:
        return Config(**data), [parsed.get(k) for k, _, _ in assigned]
    except ConfigError as e:
        for path, msg in e.problems:
            owners = [(len(parts), key) for key, parts, _ in assigned
                      if path == _loc(parts) or path.startswith(_loc(parts) + ".")]
            if owners:
                _, key = max(owners)
                problems.append((f"{key}={G.label(parsed.get(key))}", msg))
            else:
                point = ", ".join(f"{k}={G.label(parsed.get(k, v))}" for k, _, v in assigned)
                shared.setdefault((path, msg), []).append(point)
        return None, None


def plan(base, grid: dict | None = None, seeds: int = 1, duration: float | None = None) -> Plan:
    """Every run of the sweep, checked before anything runs; all problems at once."""
    problems: list[tuple[str, str]] = []
    cfg, base_duration = _base(base)
    duration = base_duration if duration is None else duration
    duration = 10.0 if duration is None else duration
    try:
        duration = Scenario(config=cfg, duration=duration).duration   # checked, a float
    except ConfigError as e:
        problems += e.problems
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        problems.append(("seeds", f"{seeds!r}; give a whole number of seeds, at least 1"))
    values = _grid_values(grid or {}, problems)
    dumped = cfg.model_dump()
    ints = seed_ints(cfg.seed, seeds) if not problems else []
    runs, points, first, orders, shared = [], [], {}, {}, {}
    for combo in itertools.product(*(v for _, v in values.values())):
        assigned = [(k, parts, v) for (k, (parts, _)), v in zip(values.items(), combo)]
        point, combo = _point_config(dumped, assigned, problems, shared)
        if point is None or problems or shared:
            continue                      # keep checking the other points, run nothing
        p = len(points)
        points.append(combo)
        orders.setdefault(point.check_order, point)
        cfgs = [point.model_copy(update={"seed": seed}) for seed in ints]
        keys = [_run_key(c, duration) for c in cfgs]
        if keys[0] in first:
            cells = [", ".join(str(G.label(v)) for v in c) for c in (points[first[keys[0]]],
                                                                      combo)]
            problems.append(("grid", f"points {cells[0]} and {cells[1]} give the same "
                                     "runs (threads and engine change no count)"))
        first.setdefault(keys[0], p)
        runs += [Run(key, p, s, seed, c.model_dump())
                 for s, (key, seed, c) in enumerate(zip(keys, ints, cfgs))]
    for (path, msg), where in shared.items():
        more = f" (and {len(where) - 1} more points)" if len(where) > 1 else ""
        problems.append((f"{where[0]}{more}" + (f": {path}" if path else ""), msg))
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    labels = {k: G.column([G.label(c[i]) for c in points]) for i, k in enumerate(values)}
    counters = _union([counter_names(c) for c in orders.values()])
    return Plan(list(values), labels, runs, counters, seeds, duration)
