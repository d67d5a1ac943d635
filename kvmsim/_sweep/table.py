"""SweepTable: the runs of a sweep as a pandas DataFrame, their per-point summary and plot."""

from __future__ import annotations

import math

try:
    import pandas as pd
except ImportError:
    raise ImportError("kvmsim.sweep() needs pandas: pip install 'kvmsim[dask]'") from None

from .. import _names
from .stats import mean_interval

KEY_COLUMNS = ("point", "seed_index", "seed")


class SweepTable(pd.DataFrame):
    """One row per point and seed: point (its index in the grid), the grid paths,
    seed_index, seed (the run's Config.seed) and every counter (totals over the run)."""

    _metadata = ["grid_columns", "counters", "seeds"]

    @property
    def _constructor(self):
        return SweepTable

    @classmethod
    def build(cls, plan, done: dict) -> SweepTable:
        """The rows of `plan` that `done` (key -> file row) holds, in grid and seed order."""
        runs = [r for r in plan.runs if r.key in done]
        data = {"point": pd.Series([r.point for r in runs], dtype="int64")}
        for k in plan.keys:
            cells = plan.labels[k]
            dtype = "int64" if all(isinstance(c, int) for c in cells) else \
                "float64" if all(isinstance(c, float) for c in cells) else object
            data[k] = pd.Series([cells[r.point] for r in runs], dtype=dtype)
        data["seed_index"] = pd.Series([r.seed_index for r in runs], dtype="int64")
        data["seed"] = pd.Series([r.seed for r in runs], dtype="int64")
        for c in plan.counters:
            data[c] = pd.Series([done[r.key].get(c, 0) for r in runs], dtype="int64")
        table = cls(data)
        table.grid_columns, table.counters, table.seeds = list(plan.keys), list(plan.counters), \
            plan.seeds
        return table

    def summary(self, counters: list[str] | None = None, level: float = 0.95) -> pd.DataFrame:
        """Per point: the grid paths, n (seeds run) and, per counter, its mean over seeds and
        the `level` interval of that mean (Student's t; NaN with one seed):
        <counter>.mean, <counter>.low, <counter>.high."""
        counters = [c if c in self.columns else _names.canonical(c)
                    for c in (self.counters if counters is None else counters)]
        unknown = [c for c in counters if c not in self.columns]
        if unknown:
            raise KeyError(f"unknown counter {', '.join(unknown)}; allowed: the table's "
                           "counter columns (Result.totals names)")
        rows = []
        for _, g in pd.DataFrame(self).groupby("point", sort=True):
            row = {k: g[k].iloc[0] for k in ("point", *self.grid_columns)}
            row["n"] = len(g)
            for c in counters:
                row[f"{c}.mean"], row[f"{c}.low"], row[f"{c}.high"] = \
                    mean_interval([int(v) for v in g[c]], level)
            rows.append(row)
        columns = ["point", *self.grid_columns, "n",
                   *(f"{c}.{s}" for c in counters for s in ("mean", "low", "high"))]
        return pd.DataFrame(rows, columns=columns)

    def varying(self) -> list[str]:
        """Grid paths with more than one value in the table."""
        return [k for k in self.grid_columns if self[k].nunique() > 1]

    def plot(self, counter: str = "canceled_vmenters", kind: str = "lines", ax=None):
        """Draw one counter's mean per point with its 95% interval (matplotlib); returns
        the Axes. lines: x is the last grid path that varies, one line per value of the
        others; heatmap: the two grid paths that vary, the mean as colour."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("SweepTable.plot() needs matplotlib: pip install "
                              "'kvmsim[plot]'") from None
        problems = plot_problems(self.varying(), kind)
        if problems:
            raise ValueError(problems[0])
        counter = _names.canonical(counter)
        s = self.summary([counter])
        if ax is None:
            ax = plt.figure(figsize=(8, 4.5)).add_subplot()
        fixed = [f"{k}={s[k].iloc[0]}" for k in self.grid_columns if k not in self.varying()]
        title = f"{counter}, mean over {self.seeds} seed{'s' * (self.seeds != 1)}"
        ax.set_title(title + (f" ({', '.join(fixed)})" if fixed else ""))
        (_heatmap if kind == "heatmap" else _lines)(ax, s, counter, self.varying())
        return ax


def plot_problems(varying: list[str], kind: str) -> list[str]:
    if kind not in ("lines", "heatmap"):
        return [f"plot kind {kind!r}; allowed: lines, heatmap"]
    if kind == "lines" and not varying:
        return ["nothing to plot: no grid path has two values"]
    if kind == "heatmap" and len(varying) != 2:
        return [f"a heatmap needs exactly two grid paths with several values; this grid has "
                f"{len(varying)}" + (f" ({', '.join(varying)})" if varying else "")]
    return []


def _positions(values) -> tuple[list, list | None]:
    """x positions: the values if numeric, else 0, 1, ... with the values as tick labels."""
    if all(isinstance(v, (int, float)) for v in values):
        return list(values), None
    return list(range(len(values))), [str(v) for v in values]


def _lines(ax, s, counter, varying) -> None:
    x, others = varying[-1], varying[:-1]
    xs = list(dict.fromkeys(s[x]))
    pos, ticks = _positions(xs)
    at = dict(zip(xs, pos))
    groups = s.groupby(others, sort=False) if others else [((), s)]
    for name, g in groups:
        mean = g[f"{counter}.mean"]
        err = [mean - g[f"{counter}.low"], g[f"{counter}.high"] - mean]
        has_err = not any(math.isnan(v) for v in g[f"{counter}.low"])
        name = name if isinstance(name, tuple) else (name,)
        ax.errorbar([at[v] for v in g[x]], mean, yerr=err if has_err else None, marker="o",
                    capsize=3, label=", ".join(f"{k}={v}" for k, v in zip(others, name)))
    if ticks:
        ax.set_xticks(pos, ticks)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{counter} (mean, 95% interval)")
    if others:
        ax.legend()


def _heatmap(ax, s, counter, varying) -> None:
    rows, cols = varying
    grid = s.pivot_table(index=rows, columns=cols, values=f"{counter}.mean", sort=False)
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(grid.index)), [str(v) for v in grid.index])
    ax.set_xticks(range(len(grid.columns)), [str(v) for v in grid.columns])
    ax.set_ylabel(rows)
    ax.set_xlabel(cols)
    for i, row in enumerate(grid.to_numpy(dtype=float)):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.4g}", ha="center", va="center", color="w", fontsize=8)
    ax.figure.colorbar(image, ax=ax, label=f"{counter} (mean)")
