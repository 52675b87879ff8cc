"""The strict base model every settings section derives from."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors, values are validated on assignment, and the object is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
