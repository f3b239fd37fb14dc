"""The base class every recipe section derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: unknown keys are errors, every field carries a description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
