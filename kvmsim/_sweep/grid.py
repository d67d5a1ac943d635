"""Field paths into the pydantic config models: `order`, `workload.vcpus`,
`workload.sources[0].rate`, `costs.handlers.PMU`.

Paths are walked generically over the models' annotations and a dumped config, so a field
added to a model later can be swept without changes here. A value that a model's validator
expands (a workload preset given by name) is expanded before a deeper path is set in it.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Annotated, Literal, Union

from pydantic import BaseModel

# Fields the sweep itself sets; sweeping them would break the seed bookkeeping.
RESERVED = {"seed": "the sweep sets it: give the base seed in the base config, the number of "
                    "seeds with seeds=N (--seeds N)"}

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")

Part = str | int


class PathError(ValueError):
    """A path that does not name a field; the message says what is allowed there."""


class Text(str):
    """A value as typed on the command line, parsed by its field's type (parse_text) once
    the path is walked: the type can depend on the point (a source's kind of model)."""


def parse_path(path: str) -> tuple[Part, ...]:
    """'workload.sources[0].rate' -> ('workload', 'sources', 0, 'rate')."""
    parts: list[Part] = []
    for seg in path.split("."):
        m = _SEGMENT.fullmatch(seg)
        if not m:
            raise PathError(f"{path!r} is not a field path; write NAME.NAME[INDEX].NAME, e.g. "
                            "workload.sources[0].rate")
        parts.append(m[1])
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", m[2])]
    return tuple(parts)


def show(parts: tuple[Part, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def _unwrap(ann):
    while typing.get_origin(ann) is Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _members(ann) -> tuple:
    ann = _unwrap(ann)
    if typing.get_origin(ann) in (Union, types.UnionType):
        return tuple(_unwrap(a) for a in typing.get_args(ann))
    return (ann,)


def _is_model(ann) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def model_of(ann, value) -> type[BaseModel] | None:
    """The model class a value at this annotation is validated as, or None if not a model.
    In a union of models (the sources list) the member is the one whose literal fields
    (the discriminator) match the value."""
    models = [m for m in _members(ann) if _is_model(m)]
    if len(models) <= 1:
        return models[0] if models else None
    if not isinstance(value, dict):
        return None
    for m in models:
        lits = {k: f.annotation for k, f in m.model_fields.items()
                if typing.get_origin(f.annotation) is Literal}
        if all(value.get(k, m.model_fields[k].default) in typing.get_args(a)
               for k, a in lits.items()):
            return m
    return None


def _container(ann, kind) -> object | None:
    """The element annotation if `ann` admits a list (kind=list) or a dict (kind=dict)."""
    for m in _members(ann):
        if typing.get_origin(m) is kind:
            args = typing.get_args(m)
            return args[-1] if args else typing.Any
    return None


def walk(root: type[BaseModel], data: dict, parts: tuple[Part, ...], expand):
    """(container, key, annotation) of the field the path names in `data`, a dumped
    `root`. expand(prefix) returns the dumped model that a string at prefix (a preset
    name) validates to; it is stored in place so a deeper field can be set."""
    node, ann = data, root
    for i, part in enumerate(parts):
        here = show(parts[:i]) or "the config"
        cls = model_of(ann, node)
        if cls is not None:
            allowed = [f for f in cls.model_fields if not (cls is root and f in RESERVED)]
            if cls is root and part in RESERVED:
                raise PathError(f"{part!r} cannot be swept: {RESERVED[part]}")
            if part not in allowed:
                raise PathError(f"unknown field {part!r} in {here}; allowed: "
                                f"{', '.join(allowed)}")
            child_ann = cls.model_fields[part].annotation
        elif isinstance(node, list):
            if not isinstance(part, int):
                raise PathError(f"{here} is a list: index it, {here}[0]")
            if not 0 <= part < len(node):
                raise PathError(f"{here} has {len(node)} item{'s' * (len(node) != 1)}; "
                                f"allowed: [0]..[{len(node) - 1}]" if node else
                                f"{here} is empty: nothing to index")
            child_ann = _container(ann, list)
        elif isinstance(node, dict):
            if isinstance(part, int):
                raise PathError(f"{here} is a table: name a key, {here}.KEY")
            child_ann = _container(ann, dict)
        else:
            raise PathError(f"{here} is a value ({node!r}), it has no field {part!r}")
        if i == len(parts) - 1:
            return node, part, child_ann
        if isinstance(node, dict) and part not in node:
            raise PathError(f"{show(parts[:i + 1])} is not set in the base config, so it "
                            f"has no field {parts[i + 1]!r}")
        model = model_of(child_ann, None)
        if isinstance(node[part], str) and model is not None:
            node[part] = expand(parts[:i + 1])
        elif node[part] is None and model is not None:
            try:                            # an optional model left out: its defaults
                node[part] = model().model_dump()
            except ValueError as e:
                raise PathError(f"{show(parts[:i + 1])} is not set in the base config and "
                                f"has no default to set a field in: {e}") from None
        node, ann = node[part], child_ann
    raise PathError("an empty path names no field")


def parse_text(text: str, ann):
    """A command-line value parsed by the field's type: int, float, str, bool, `none` for
    an optional field, NAME+NAME+... for a list (an order given as request names)."""
    members = _members(ann)
    if text == "none" and type(None) in members:
        return None
    if "+" in text:
        item = _container(ann, list)
        if item is not None:
            return [parse_text(t, item) for t in text.split("+")]
    errors = []
    for m in members:
        origin = typing.get_origin(m)
        if m is bool:
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            errors.append("true or false")
        elif m is int:
            try:
                return int(text)
            except ValueError:
                errors.append("an integer")
        elif m is float:
            try:
                return float(text)
            except ValueError:
                errors.append("a number")
        elif m is str or origin is Literal or _is_model(m):
            return text          # a preset name for a model; the model validates it
        elif origin is list:
            return [parse_text(text, _container(m, list))]
        elif origin is dict:
            raise ValueError(f"{text!r}: a table cannot be given on the command line; set "
                             "its keys, PATH.KEY=VALUE")
    raise ValueError(f"{text!r} is not {' or '.join(dict.fromkeys(errors)) or 'a value'}")


def label(value):
    """A grid value as a table cell: scalars as they are, a list as NAME+NAME+... (the
    command-line syntax), anything else (a model, a table) as JSON."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return "+".join(str(v) for v in value)
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True)


def column(labels: list):
    """One type per column (parquet needs it): ints, numbers (int and float), or str."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        return labels
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels):
        return [float(v) for v in labels]
    return [v if isinstance(v, str) else json.dumps(v) for v in labels]
