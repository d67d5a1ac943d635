"""One error type for every bad input, carrying all problems found at once."""

from __future__ import annotations

from pydantic import ValidationError


_UNION_TAGS = ("trace", "poisson", "periodic", "str", "list[str]")


class ConfigError(ValueError):
    """Bad configuration. `problems` is a list of (field path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))

    @classmethod
    def from_pydantic(cls, err: ValidationError, prefix: str = "",
                      unknown=lambda loc: None) -> ConfigError:
        """unknown(loc) -> the message for an unknown field at loc, or None."""
        problems = []
        for e in err.errors(include_url=False):
            # Drop the member names pydantic adds inside unions (sources.1.poisson.rate).
            loc = [p for p in e["loc"] if p not in _UNION_TAGS]
            path = ".".join(str(p) for p in (prefix, *loc) if p != "")
            inner = e.get("ctx", {}).get("error")
            if isinstance(inner, ConfigError):       # a nested model's own ConfigError
                problems += [(".".join(x for x in (path, p) if x), m) for p, m in inner.problems]
                continue
            msg = e["msg"].removeprefix("Value error, ")
            named = unknown(tuple(e["loc"])) if e["type"] == "extra_forbidden" else None
            if named:
                msg = named
            elif e["type"] != "value_error" and "input" in e:
                msg = f"{msg} (got {e['input']!r})"
            problems.append((path, msg))
        return cls(problems)
