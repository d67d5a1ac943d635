"""Base for the configuration models: strict fields, and ConfigError instead of pydantic's."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The fields of the sub-model that error location `loc` (ending in the bad key) names;
    None where it cannot tell (inside a union of models)."""
    for key in loc[:-1]:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)] \
            if isinstance(field.annotation, types.UnionType) or \
            typing.get_origin(field.annotation) is typing.Union else [field.annotation]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) != 1:
            return None
        model = models[0]
    return list(model.model_fields)


class Validated(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError.from_pydantic(e, unknown=self._unknown) from None

    @classmethod
    def _unknown(cls, loc: tuple) -> str | None:
        """What to say about an unknown field at loc: the fields allowed there."""
        allowed = _fields_at(cls, loc)
        return (f"unknown field {loc[-1]!r}; allowed: {', '.join(allowed)}"
                if allowed is not None else None)
