"""What every page module of the UI shares: the app's folders, the page renderer and the CSRF check.

:func:`tuneforge.ui.app.create_app` builds one :class:`Site` and hands it to each page module's
``register(app, site)`` (``rag_pages``, ``export_pages``), so the pages stay in files of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse

from tuneforge.ui import auth, catalog
from tuneforge.ui.indexes import Index


class CrossSite(Exception):
    """A POST without the matching CSRF token or from another origin."""


@dataclass
class Site:
    runs: Path
    indexes: dict[str, Index]
    page: Callable[..., HTMLResponse]  # page(request, template, status_code=200, **context)

    def csrf(self, request: Request, submitted: str) -> None:
        """Every state-changing POST carries the CSRF cookie's value (form field or X-CSRF-Token header)."""
        if not auth.csrf_ok(request, request.headers.get("x-csrf-token") or submitted or None):
            raise CrossSite()

    def folder(self, name: str) -> Path:
        return catalog.run_path(self.runs, name)

    def finished_runs(self) -> list[str]:
        """Finished runs (their recipe names the base model that answers with retrieval)."""
        return [r.name for r in catalog.list_runs(self.runs, with_verdict=False) if r.status == "finished"]
