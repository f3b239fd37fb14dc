"""User-facing errors.

A `UserError` is a mistake the user can fix (bad recipe, bad data, missing file). The CLI prints its
message on one line (or one line per problem) and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input; its message says what is wrong and how to fix it."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    def render(self) -> str:
        from tuneforge.secrets import redact_text

        lines = [f"error: {self.args[0]}"]
        lines += [f"  - {p}" for p in self.problems]
        # A message may quote a recipe value or a library's error text holding a URL with a password.
        return redact_text("\n".join(lines))
