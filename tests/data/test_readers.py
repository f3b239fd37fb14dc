"""Every reader yields the same records with their line numbers, streaming where the format allows."""

from __future__ import annotations

import bz2
import csv
import gzip
import json

import pytest

from tuneforge.data.readers import read_rows

RECORDS = [
    {"text": "Sharp, funny and humane.", "label": "positive"},
    {"text": 'A "twist" that, sadly,\nfalls flat.', "label": "negative"},
    {"text": "Café scenes in Zürich – lovely.", "label": "positive"},
]


def _write_csv(path, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"], delimiter=delimiter)
        w.writeheader()
        w.writerows(RECORDS)


def _records(path, **kw):
    rows = list(read_rows(path, **kw))
    assert all(r.problem is None for r in rows), [r.problem for r in rows]
    return [r.record for r in rows], [r.line for r in rows]


def test_jsonl_json_csv_tsv_parquet_and_arrow_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    (tmp_path / "d.json").write_text(json.dumps(RECORDS, indent=2, ensure_ascii=False), encoding="utf-8")
    _write_csv(tmp_path / "d.csv")
    _write_csv(tmp_path / "d.tsv", "\t")
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "arrow"))
    DatasetDict({"train": Dataset.from_list(RECORDS), "test": Dataset.from_list(RECORDS[:1])}).save_to_disk(
        str(tmp_path / "dd"))
    for name in ["d.jsonl", "d.json", "d.csv", "d.tsv", "d.parquet", "arrow", "dd"]:
        records, _ = _records(tmp_path / name)
        assert records == RECORDS, name
    assert _records(tmp_path / "d.jsonl")[1] == [1, 2, 3]
    assert _records(tmp_path / "d.csv")[1] == [2, 3, 5]  # the quoted newline makes record 2 span two lines
    assert _records(tmp_path / "d.json")[1] == [2, 6, 10]
    assert _records(tmp_path / "dd", split="test")[0] == RECORDS[:1]


def test_compressed_files_are_read_on_the_fly(tmp_path):
    data = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "d.jsonl.bz2").write_bytes(bz2.compress(data))
    assert _records(tmp_path / "d.jsonl.gz")[0] == RECORDS
    assert _records(tmp_path / "d.jsonl.bz2")[0] == RECORDS


def test_json_array_is_streamed_across_buffer_boundaries(tmp_path):
    # Records larger in total than the 1 MiB read size, with multi-byte characters straddling chunks.
    records = [{"i": i, "text": "é" * 997 + str(i)} for i in range(1500)]
    (tmp_path / "big.json").write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]",
                                       encoding="utf-8")
    got, lines = _records(tmp_path / "big.json")
    assert got == records
    assert lines[:3] == [2, 3, 4] and lines[-1] == 1501


def test_datasetdict_with_many_splits_needs_a_choice(tmp_path):
    from datasets import Dataset, DatasetDict

    from tuneforge.errors import UserError

    DatasetDict({"a": Dataset.from_list(RECORDS), "b": Dataset.from_list(RECORDS)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match="data.split"):
        list(read_rows(tmp_path / "dd"))
    assert _records(tmp_path / "dd", split="b")[0] == RECORDS


def test_unknown_extension_is_a_clear_error(tmp_path):
    from tuneforge.errors import UserError

    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(UserError, match="unknown file type '.xlsx'"):
        read_rows(tmp_path / "d.xlsx")


@pytest.fixture()
def restore_csv_limit():
    """The csv field limit is process-wide: leave it as this test found it."""
    saved = csv.field_size_limit()
    yield
    csv.field_size_limit(saved)


def test_a_small_line_limit_does_not_leak_into_later_csv_reads(tmp_path, monkeypatch, restore_csv_limit):
    # The fresh-machine failure: a CSV read with a small line limit, then the drug reviews unpacked into an
    # empty cache (their csv.DictReader has long review fields) died with "field larger than field limit".
    from tuneforge.data.sources import bundled_dataset_path

    (tmp_path / "small.csv").write_text("text,label\nShort and sweet.,positive\n", encoding="utf-8")
    assert _records(tmp_path / "small.csv", max_line_bytes=1024)[0] == [{"text": "Short and sweet.", "label": "positive"}]
    long_field = "A long review. " * 200  # 3,000 characters
    with open(tmp_path / "long.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], [long_field, "positive"]])
    with open(tmp_path / "long.csv", newline="", encoding="utf-8") as f:
        assert list(csv.reader(f))[1][0] == long_field  # a caller's own csv reader
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    drugs = bundled_dataset_path("drug-reviews")
    assert drugs.is_relative_to(tmp_path / "cache")
    assert len(drugs.read_text(encoding="utf-8").splitlines()) == 979


def test_a_quoted_field_over_the_limit_is_one_bad_row(tmp_path):
    # Each physical line is under the limit, the quoted field spanning them is not: that row is reported
    # (with its line) and reading goes on.
    big = "\n".join(["x" * 600] * 3)
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], ["fine", "positive"], [big, "negative"], ["also fine", "negative"]])
    rows = list(read_rows(tmp_path / "d.csv", max_line_bytes=1024))
    assert [r.record["text"] for r in rows if r.record] == ["fine", "also fine"]
    bad = [r.problem for r in rows if r.problem]
    assert len(bad) == 1 and bad[0].line == 3 and "1024" in bad[0].message, bad
