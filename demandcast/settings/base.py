"""The strict base model every settings section derives from."""
from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _numeric(annotation) -> bool:
    """int or float, optionally Optional: the fields where YAML's true/false/yes/no is a mistake."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class Section(BaseModel):
    """Unknown keys are errors, values are validated on assignment, and the object is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value, info: ValidationInfo):
        # pydantic's lax mode reads true as 1: `epochs: yes` or `--set spark.shuffle_partitions=true`
        # would run with 1 instead of being refused.
        if isinstance(value, bool) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, not a boolean")
        return value
