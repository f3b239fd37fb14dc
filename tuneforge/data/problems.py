"""Data problems with a location: every bad row becomes one line ``file:line: field: what is wrong``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in one record. ``line`` is the 1-based line (JSONL/CSV/JSON) or row (Parquet/Arrow)."""

    kind: str
    file: str
    line: int | None
    field: str
    message: str

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}"


class RowError(Exception):
    """Raised by converters and templates for one record; the pipeline turns it into a Problem."""

    def __init__(self, field: str, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.kind = kind
