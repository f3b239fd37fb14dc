"""Tiny inline-SVG charts for the HTML report: no plotting library, nothing fetched when it opens."""

from __future__ import annotations

import math
from html import escape

COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def bar_chart(
    labels: list[str], values: list[float], lows: list[float | None] | None = None,
    highs: list[float | None] | None = None, title: str = "", colors: list[str] | None = None,
    width: int = 640, zero_line: bool = True, domain: tuple[float, float] | None = None,
) -> str:
    """Horizontal bars with optional interval whiskers (values may be negative: deltas)."""
    if not values:
        return ""
    lows = lows or [None] * len(values)
    highs = highs or [None] * len(values)
    pts = [v for v in values if v == v] + [x for x in lows + highs if x is not None]
    lo, hi = min(0.0, *pts), max(0.0, *pts)
    if domain is not None:  # e.g. (0, 1) for proportions, so 0.02 does not fill the chart
        lo, hi = min(lo, domain[0]), max(hi, domain[1])
    ticks = _ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    left, right, row_h, top = 190, 20, 26, 30 if title else 10
    plot_w = width - left - right
    height = top + row_h * len(values) + 30

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'font-family="sans-serif" font-size="12">']
    if title:
        parts.append(f'<text x="{width / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
    for t in ticks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - 25}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{height - 10}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    if zero_line and lo < 0 < hi:
        parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top}" y2="{height - 25}" stroke="#333"/>')
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row_h
        color = (colors or COLORS)[i % len(colors or COLORS)]
        x0, x1 = sorted((x(0.0), x(v)))
        parts.append(f'<text x="{left - 6}" y="{y + 17}" text-anchor="end">{escape(label)}</text>')
        parts.append(f'<rect x="{x0:.1f}" y="{y + 5}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 10}" '
                     f'fill="{color}"><title>{escape(label)}: {v:.4g}</title></rect>')
        if lows[i] is not None and highs[i] is not None:
            a, b, cy = x(lows[i]), x(highs[i]), y + row_h / 2
            parts.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{cy}" y2="{cy}" stroke="#000"/>'
                         f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{cy - 5}" y2="{cy + 5}" stroke="#000"/>'
                         f'<line x1="{b:.1f}" x2="{b:.1f}" y1="{cy - 5}" y2="{cy + 5}" stroke="#000"/>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, list[tuple[float, float]]], title: str = "", x_label: str = "step",
               y_label: str = "", width: int = 640, height: int = 300) -> str:
    """One polyline per series (with dots when a series has few points)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt, yt = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    x_lo, x_hi, y_lo, y_hi = min(xt[0], min(xs)), max(xt[-1], max(xs)), min(yt[0], min(ys)), max(yt[-1], max(ys))
    left, right, top, bottom = 55, 120, 30, 40
    pw, ph = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + (v - x_lo) / ((x_hi - x_lo) or 1) * pw

    def py(v: float) -> float:
        return top + ph - (v - y_lo) / ((y_hi - y_lo) or 1) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'font-family="sans-serif" font-size="12">']
    if title:
        parts.append(f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
    for t in yt:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#555">{_fmt(t)}</text>')
    for t in xt:
        parts.append(f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" '
                     f'text-anchor="middle">{escape(y_label)}</text>')
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        s = sorted(s)
        path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in s)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(s) <= 40:
            parts += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{color}"><title>{escape(name)} '
                      f'step {_fmt(a)}: {b:.4g}</title></circle>' for a, b in s]
        ly = top + 14 + i * 18
        parts.append(f'<rect x="{left + pw + 12}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{left + pw + 30}" y="{ly + 1}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(edges: list[float], counts: list[int], title: str = "", x_label: str = "",
              width: int = 640, height: int = 260) -> str:
    """Bars for ``counts[i]`` between ``edges[i]`` and ``edges[i + 1]``."""
    if not counts or len(edges) != len(counts) + 1:
        return ""
    left, right, top, bottom = 55, 20, 30, 40
    pw, ph = width - left - right, height - top - bottom
    c_hi = max(max(counts), 1)
    yt = _ticks(0, c_hi)
    c_hi = max(c_hi, yt[-1])
    lo, hi = edges[0], edges[-1]

    def px(v: float) -> float:
        return left + (v - lo) / ((hi - lo) or 1) * pw

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'font-family="sans-serif" font-size="12">']
    if title:
        parts.append(f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
    for t in yt:
        y = top + ph - t / c_hi * ph
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{_fmt(t)}</text>')
    for i, c in enumerate(counts):
        a, b = px(edges[i]), px(edges[i + 1])
        h = c / c_hi * ph
        parts.append(f'<rect x="{a:.1f}" y="{top + ph - h:.1f}" width="{max(b - a - 1, 1):.1f}" height="{h:.1f}" '
                     f'fill="{COLORS[0]}"><title>{_fmt(edges[i])}-{_fmt(edges[i + 1])}: {c}</title></rect>')
    for t in _ticks(lo, hi):
        if lo <= t <= hi:
            parts.append(f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#555">{_fmt(t)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
