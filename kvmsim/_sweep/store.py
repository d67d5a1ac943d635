"""Where a sweep appends its rows as they arrive, so a killed sweep resumes.

Two formats, by the path's suffix:
- FILE.parquet: a directory of parquet parts, one per finished task, each written to a
  hidden temporary name and renamed into place (atomic), as dask's to_parquet lays out a
  dataset; `pandas.read_parquet(FILE.parquet)` reads it. Needs pyarrow.
- anything else: JSON lines, one row per line, flushed after each task. A line cut short
  by a kill is dropped (and truncated away) when the sweep resumes.
"""

from __future__ import annotations

import json
import os
import uuid

from .._errors import ConfigError


def open_store(path: str):
    return ParquetStore(path) if path.endswith(".parquet") else JsonLinesStore(path)


def _check_dir(path: str, field: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError([(field, f"cannot write {path}: no such directory {parent}")])


class JsonLinesStore:
    def __init__(self, path: str):
        self.path = path
        _check_dir(path, "out")
        if os.path.isdir(path):
            raise ConfigError([("out", f"{path} is a directory; JSON lines need a file "
                                       "(or name it *.parquet)")])

    def load(self) -> list[dict]:
        """The rows already written; a last line cut short by a kill is truncated away."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1
        rows = []
        for n, line in enumerate(data[:end].splitlines(), start=1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or "key" not in row:
                raise ConfigError([("out", f"{self.path}:{n}: not a sweep row; give a new file "
                                           "or the one a sweep wrote")])
            rows.append(row)
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        return rows

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))


class ParquetStore:
    def __init__(self, path: str):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError([("out", f"{path}: writing parquet needs pyarrow "
                                       "(pip install pyarrow); or name a .jsonl file")]) from None
        self.path = path
        _check_dir(path, "out")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError([("out", f"{path} is a file; a .parquet sweep is a directory of "
                                       "parts (give a new name)")])

    def load(self) -> list[dict]:
        import pyarrow.parquet as pq
        if not os.path.isdir(self.path):
            return []
        rows = []
        for name in sorted(os.listdir(self.path)):
            full = os.path.join(self.path, name)
            if name.startswith("."):           # a part whose writer was killed
                os.remove(full)
            elif name.endswith(".parquet"):
                rows += pq.read_table(full).to_pylist()
        return rows

    def append(self, rows: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        os.makedirs(self.path, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = os.path.join(self.path, "." + name)
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, os.path.join(self.path, name))
