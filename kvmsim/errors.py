"""One error type for every bad input, carrying all problems found at once."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(ValueError):
    """Bad configuration. `problems` is a list of (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))

    @classmethod
    def from_pydantic(cls, err: ValidationError, prefix: str = "") -> ConfigError:
        problems = []
        for e in err.errors(include_url=False):
            path = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] != "value_error" and "input" in e:
                msg = f"{msg} (got {e['input']!r})"
            problems.append((path, msg))
        return cls(problems)
