"""Metrics against hand-computed values and against the reference libraries (sacrebleu, rouge-score)."""

import numpy as np
import pytest

from tuneforge.eval import metrics as M


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The Answer!", "answer"), ("  a  cat,  an apple ", "cat apple"), ("Rotten.", "rotten")],
)
def test_normalize_squad_style(text, expected):
    assert M.normalize(text) == expected


@pytest.mark.parametrize(
    ("prediction", "label"),
    [
        ("Fresh! I loved it", "fresh"),
        ("It is rotten, not fresh", "rotten"),
        ("Answer: ROTTEN", "rotten"),
        ("I cannot tell", None),
        ("refreshing", None),  # a label inside another word is not the label
    ],
)
def test_extract_label_takes_the_earliest_whole_word_label(prediction, label):
    assert M.extract_label(prediction, ["fresh", "rotten"]) == label


def test_extract_label_prefers_longer_label_at_same_position():
    assert M.extract_label("very positive overall", ["positive", "very positive"]) == "very positive"


def test_accuracy_uses_extracted_label():
    assert M.accuracy("Rotten, sadly.", "rotten", ["fresh", "rotten"]) == 1.0
    assert M.accuracy("fresh", "rotten", ["fresh", "rotten"]) == 0.0
    assert M.accuracy("no idea", "rotten", ["fresh", "rotten"]) == 0.0


def test_exact_match_and_token_f1_hand_computed():
    assert M.exact_match("The Cat.", "cat") == 1.0
    assert M.exact_match("cat sat", "cat") == 0.0
    # normalised: pred "cat sat on mat" (4), ref "cat sat" (2): overlap 2 -> P 1/2, R 1 -> F1 2/3
    assert M.token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    assert M.token_f1("dog", "cat") == 0.0
    # repeated tokens count once per occurrence: pred "a a b" -> [b]? no: articles dropped -> ["b"]
    assert M.token_f1("x x y", "x y y") == pytest.approx(2 / 3)


def test_rouge_l_hand_computed():
    # LCS of [the cat sat on the mat] and [the cat is on the mat] is 5 -> P = R = 5/6
    assert M.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert M.rouge_l("", "anything") == 0.0


def test_rouge_l_matches_rouge_score_library(rt_rows):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    texts = [r["text"] for r in rt_rows[:30]]
    for pred, ref in zip(texts[:15], texts[15:], strict=True):
        expected = scorer.score(ref, pred)["rougeL"].fmeasure
        assert M.rouge_l(pred, ref) == pytest.approx(expected, abs=1e-9)
    for text in texts[:5]:  # a prefix of the reference: recall < 1, precision 1
        ref, pred = text, " ".join(text.split()[:5])
        assert M.rouge_l(pred, ref) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure, abs=1e-9)


def test_bleu_and_chrf_match_sacrebleu(rt_rows):
    import sacrebleu

    refs = [r["text"] for r in rt_rows[:10]]
    preds = [" ".join(t.split()[: max(3, len(t.split()) // 2)]) for t in refs]
    assert M.bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert M.chrf(preds, refs) == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score)
    assert M.bleu(refs, refs) == pytest.approx(100.0)
    assert M.chrf(refs, refs) == pytest.approx(100.0)


def test_bootstrap_interval_contains_mean_and_is_reproducible():
    scores = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    mean, lo, hi = M.bootstrap_ci(scores, samples=500, seed=3)
    assert mean == pytest.approx(0.7)
    assert lo <= mean <= hi
    assert (lo, hi) == M.bootstrap_ci(scores, samples=500, seed=3)[1:]
    assert M.bootstrap_ci([1.0, 1.0, 1.0], samples=100) == (1.0, 1.0, 1.0)
    assert M.bootstrap_ci([1.0], samples=100) == (1.0, None, None)  # one example: no interval


def test_bootstrap_interval_shrinks_with_more_examples():
    small = M.bootstrap_ci([1, 0] * 10, samples=1000, seed=0)
    large = M.bootstrap_ci([1, 0] * 500, samples=1000, seed=0)
    assert (large[2] - large[1]) < (small[2] - small[1])


def test_bootstrap_interval_matches_normal_approximation_for_large_n():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 2, size=2000).astype(float)
    mean, lo, hi = M.bootstrap_ci(scores, samples=2000, seed=1)
    half = 1.96 * scores.std() / np.sqrt(scores.size)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_paired_delta():
    base = [1, 1, 0, 0, 1, 0, 1, 0]
    assert M.paired_delta(base, base, samples=100) == (0.0, 0.0, 0.0)
    d, lo, hi = M.paired_delta([1] * 30, [0] * 30, samples=200)
    assert d == -1.0 and hi == -1.0
    with pytest.raises(ValueError):
        M.paired_delta([1, 0], [1])


def test_corpus_bootstrap_interval_brackets_value(rt_rows):
    refs = [r["text"] for r in rt_rows[:20]]
    preds = [" ".join(t.split()[:4]) for t in refs]
    value, lo, hi = M.corpus_bootstrap_ci(M.chrf, preds, refs, samples=50, seed=0)
    assert value == pytest.approx(M.chrf(preds, refs))
    assert lo <= value <= hi


def test_default_metrics():
    assert M.default_metrics("sentiment", classification=True) == ["accuracy"]
    assert "rouge_l" in M.default_metrics("summarise", classification=False)
    assert {"bleu", "chrf"} <= set(M.default_metrics("translation-ja-en", classification=False))


def test_all_wrong_still_gets_a_non_degenerate_interval():
    # 0/60 correct: a bootstrap can only say [0, 0]; Wilson gives [0, z^2 / (n + z^2)] = [0, 0.0602]
    mean, lo, hi = M.mean_ci([0.0] * 60, samples=200)
    assert mean == 0.0 and lo == 0.0
    assert hi == pytest.approx(1.959964**2 / (60 + 1.959964**2), abs=1e-4)
    assert M.mean_ci([1.0, 0.0, 1.0], samples=200) == M.bootstrap_ci([1.0, 0.0, 1.0], samples=200)
