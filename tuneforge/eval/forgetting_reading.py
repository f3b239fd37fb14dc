"""Forgetting in plain words: one sentence per probe saying what changed, how sure, what the sample sees."""

from __future__ import annotations

from tuneforge.eval.behaviour import worse_beyond
from tuneforge.eval.forgetting import ForgettingDelta


def near_chance(d: ForgettingDelta, slack: float = 0.05) -> bool:
    """The base model scores within ``slack`` of guessing: nothing there to forget."""
    return d.chance is not None and d.base <= d.chance + slack


def _num(v: float, metric: str) -> str:
    if metric in ("label_answers", "repeated_answer", "short_answers"):
        return f"{v:.0%}"
    if metric == "mean_words":
        return f"{v:.1f}"
    return f"{v:.3f}"


def _signed(v: float, metric: str) -> str:
    if metric in ("label_answers", "repeated_answer", "short_answers"):
        return f"{v * 100:+.0f} points"
    return f"{v:+.1f}" if metric == "mean_words" else f"{v:+.3f}"


def _interval(d: ForgettingDelta) -> str:
    if d.ci_low is None or d.ci_high is None:
        return ""
    return f", interval [{_signed(d.ci_low, d.metric)}, {_signed(d.ci_high, d.metric)}]"


def _power_note(d: ForgettingDelta) -> str:
    parts = []
    if d.detectable is not None:
        parts.append(f"{d.n} inputs detect a change of {_signed(d.detectable, d.metric).lstrip('+')} or more")
    if d.needed is not None and not d.flagged and d.delta != 0:
        parts.append(f"showing the observed {_signed(d.delta, d.metric)} would take about {d.needed:,} inputs")
    return f" ({'; '.join(parts)})" if parts else ""


def _within_margin(d: ForgettingDelta) -> str:
    """Why an unflagged behaviour change is not flagged: none shown, or one shown but within the margin."""
    shown = worse_beyond(d.worse, d.ci_low, d.ci_high)
    if not shown:
        return "; no change for the worse shown"
    margin = _signed(d.threshold or 0.0, d.metric).lstrip("+")
    return f"; a change for the worse, but its interval does not lie beyond the {margin} flag margin"


def reading(d: ForgettingDelta) -> str:
    """One plain-words sentence per probe: what changed, how sure, and what the sample can see."""
    name, m = d.probe, d.metric
    if name == "drift":
        if d.flagged:
            return (f"Drift: on general text and chat the tuned model's next-token distributions moved "
                    f"{d.delta:.3f} nats per token from the base model's{_interval(d)}, above the flag level "
                    f"{d.threshold}: it now continues text it was not trained on very differently.")
        seen = d.ci_low is not None and d.ci_low > 0
        return (f"Drift: {d.delta:.3f} nats per token from the base model on general text and chat{_interval(d)}"
                + (f"; measurable but below the flag level {d.threshold}." if seen else "; no measurable drift.")
                + _power_note(d))
    if name == "general_loss":
        if d.flagged:
            return (f"General loss: on reference answers of general instructions its loss rose "
                    f"{d.base:.3f} -> {d.tuned:.3f} nats per token ({d.delta:+.3f}{_interval(d)}): it has lost "
                    "ground on things it was not trained for.")
        return (f"General loss: {d.base:.3f} -> {d.tuned:.3f} nats per token ({d.delta:+.3f}{_interval(d)}); "
                "no loss of ground shown." + _power_note(d))
    if name == "behaviour":
        what = {
            "label_answers": "answers to general prompts that are just one of the task's answers",
            "repeated_answer": "general prompts given the model's single most common answer",
            "short_answers": "empty or very short answers to general prompts",
            "distinct_2": "variety of its answers to general prompts (distinct bigrams)",
            "mean_words": "mean length of its answers to general prompts, in words",
        }[m]
        change = f"{_num(d.base, m)} -> {_num(d.tuned, m)} ({_signed(d.delta, m)}{_interval(d)})"
        if d.flagged:
            consequence = {
                "label_answers": "it answers general questions with its task's labels",
                "repeated_answer": "it has collapsed to one answer for everything",
                "short_answers": "it has stopped answering properly",
                "distinct_2": "its answers have become repetitive",
            }.get(m, "")
            return f"Behaviour: {what}: {change}: {consequence}."
        if d.worse is None:
            return f"Behaviour: {what}: {change}."
        return f"Behaviour: {what}: {change}{_within_margin(d)}." + _power_note(d)
    head = f"{name}: accuracy {d.base:.3f} -> {d.tuned:.3f} ({d.delta:+.3f}{_interval(d)})"
    if d.flagged:
        return f"{head}: a significant drop in general ability."
    if near_chance(d):
        return (f"{head}; the base model is near chance ({d.chance:.2f}) here, so this probe cannot show "
                "forgetting.")
    return f"{head}; no significant drop." + _power_note(d)
