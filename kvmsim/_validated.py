"""Base for the configuration models: strict fields, and ConfigError instead of pydantic's."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError


class Validated(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError.from_pydantic(e) from None
