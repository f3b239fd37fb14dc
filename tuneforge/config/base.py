"""The base class every recipe section derives from, and validators shared by several sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

MAX_NAME_BYTES = 200  # well under every filesystem's 255-byte limit, leaving room for suffixes like -2


class Section(BaseModel):
    """A recipe section: unknown keys are errors, every field carries a description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def check_unique(names: list[str], what: str) -> None:
    """Raise ``ValueError`` (a recipe problem) when a name repeats: each names a folder in the run."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")


def check_folder_name(value: str | None) -> str | None:
    """``value`` if it names exactly one folder inside its parent, else ValueError saying why.

    The one validator of run, stage and task names: ``_name = field_validator("name")(check_folder_name)``.

    Run, stage and task names become folder names (``runs/<name>``, ``stages/<k>-<name>``,
    ``data/<task>``): a separator, ``..``, an absolute path or a NUL would write outside the parent, and a
    leading dot would hide the folder. Letters, digits, '-', '_' and '.' are portable everywhere. ``None``
    (an optional name left out) passes.
    """
    if value is None:
        return None
    if not value:
        raise ValueError("must not be empty")
    if value.startswith("."):
        raise ValueError("must not start with '.' (a hidden folder, or one outside the parent)")
    bad = sorted({c for c in value if not (c.isalnum() or c in "-_.")})
    if bad:
        raise ValueError(f"must be one plain folder name: letters, digits, '-', '_' or '.' only (not {''.join(bad)!r})")
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_NAME_BYTES} bytes long")
    return value
