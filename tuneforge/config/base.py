"""The base class every recipe section derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A recipe section: unknown keys are errors, every field carries a description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def check_unique(names: list[str], what: str) -> None:
    """Raise ``ValueError`` (a recipe problem) when a name repeats: each names a folder in the run."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
