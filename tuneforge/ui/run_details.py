"""The run page's evaluation parts: forgetting table, answers side by side, data quality, token lengths.

Read from the run folder through :mod:`tuneforge.eval.report_parts`, the functions the HTML report
uses, so the page and ``report.html`` show the same rows and numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.eval.compare import collect_predictions
from tuneforge.eval.report_parts import (
    data_quality,
    forgetting_rows,
    length_histogram,
    quality_files,
    side_by_side_examples,
)

SHOWN_EXAMPLES = 3  # answers side by side visible at first; "show more" reveals the rest, MORE at a time
MORE = 5
MAX_EXAMPLES = 50  # the page never carries more than this many (the predictions files hold them all)


def evaluation(folder: Path, verdict: Any | None) -> dict[str, Any]:
    """What the run page shows of the evaluation (empty parts when the run has none of it yet)."""
    preds = collect_predictions(folder)
    quality = [(name, q) for name, path in quality_files(folder) if (q := data_quality(path)) is not None]
    return {
        "forgetting": forgetting_rows(verdict) if verdict is not None else [],
        "examples": side_by_side_examples(preds, MAX_EXAMPLES),
        "shown_examples": SHOWN_EXAMPLES,
        "more_examples": MORE,
        "quality": quality,
        "histogram": length_histogram(folder, preds),  # SVG from eval.svg (labels escaped there)
    }
