"""The one chart style of the bench: panels of grouped bars, stacked
vertically, one legend, hand-written SVG (no plotting library needed).

Every chart the bench draws goes through `bar_chart`. A bar may carry a
spread (min and max over rounds), drawn as a thin whisker."""

import math
from dataclasses import dataclass
from html import escape
from typing import Callable

# One colour per proxy kind, the same in every chart.
COLOR = {"direct": "#9e9e9e", "ours": "#d9480f", "before": "#f59f00", "haproxy": "#1c7ed6", "haproxy-xff": "#74c0fc", "nginx": "#2b8a3e",
         "relay": "#7048e8"}
LABEL = {"direct": "direct (no proxy)", "ours": "ours (balancer)", "before": "ours, before", "haproxy": "HAProxy",
         "haproxy-xff": "HAProxy, XFF only", "nginx": "nginx", "relay": "ceiling (byte relay)"}

BAR_W, GAP, LEFT, TOP, PANEL_H, PANEL_GAP, LEGEND_W = 22, 26, 70, 40, 190, 78, 170


@dataclass
class Panel:
    title: str
    groups: list  # group labels, left to right
    series: list  # series keys, in bar order within a group
    value: Callable  # (group index, series key) -> number, (number, lo, hi), or None
    fmt: str = "{:.0f}"
    log: bool = False


def color_of(key, colors=None):
    """A series' colour: its own in `colors`, else its proxy kind's (the part before ':')."""
    if colors and key in colors:
        return colors[key]
    return COLOR.get(str(key).split(":")[0], "#868e96")


def _triple(v):
    if v is None:
        return None
    if isinstance(v, (tuple, list)):
        x, lo, hi = v
        return (x, lo if lo is not None else x, hi if hi is not None else x)
    return (v, v, v)


def _scale(values, log):
    if not values:
        values = [1]
    if log:
        lo = 10 ** math.floor(math.log10(max(min(values), 1e-3)))
        hi = 10 ** math.ceil(math.log10(max(max(values), lo * 10)))
        ticks = [lo * 10**k for k in range(round(math.log10(hi / lo)) + 1)]
        return ticks, lambda v: PANEL_H * (math.log10(max(v, lo)) - math.log10(lo)) / math.log10(hi / lo)
    step = nice_step((max(values) or 1) / 4)
    ticks = [step * k for k in range(int(max(values) / step) + 2)]
    hi = ticks[-1]
    return ticks, lambda v: PANEL_H * max(v, 0) / hi


def nice_step(raw):
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= raw."""
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def bar_chart(title, panels, legend, colors=None):
    """`legend`: [(series key, label)], coloured like the bars; `colors`:
    {series key: colour} for series not coloured by their kind. Returns SVG text."""
    layouts = []
    for p in panels:
        bars = [[(k, _triple(p.value(gi, k))) for k in p.series if _triple(p.value(gi, k)) is not None]
                for gi in range(len(p.groups))]
        widths = [max(1, len(b)) * BAR_W + GAP for b in bars]
        slanted = [len(str(g)) * 6.2 > w for g, w in zip(p.groups, widths)]
        # room under the axis for slanted labels (sin 35° of the longest)
        below = max([len(str(g)) * 6.2 * 0.58 for g, s in zip(p.groups, slanted) if s], default=0)
        layouts.append((p, bars, widths, slanted, below))
    plot_w = max(sum(w) for _, _, w, _, _ in layouts) if layouts else 100
    width = LEFT + plot_w + 20 + LEGEND_W
    height = TOP + sum(PANEL_H + PANEL_GAP + below for *_, below in layouts) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" font-family="sans-serif" '
        f'font-size="11">',
        f'<rect width="{width:.0f}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    y0 = TOP + 14
    for p, bars, widths, slanted, below in layouts:
        base = y0 + PANEL_H
        right = LEFT + sum(widths)
        ticks, scale = _scale([v for b in bars for _, (x, lo, hi) in b for v in (x, hi)], p.log)
        out.append(f'<text x="{LEFT}" y="{y0 - 8}" font-size="12" font-weight="bold">{escape(p.title)}</text>')
        for v in ticks:
            y = base - scale(v)
            out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e0e0e0"/>')
            out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{p.fmt.format(v)}</text>')
        out.append(f'<line x1="{LEFT}" y1="{base}" x2="{right}" y2="{base}" stroke="black"/>')
        gx = LEFT
        for gi, (group, b) in enumerate(zip(p.groups, bars)):
            x0 = gx + GAP / 2
            for bi, (k, (x, lo, hi)) in enumerate(b):
                h = scale(x)
                bx = x0 + bi * BAR_W
                spread = f" (min {p.fmt.format(lo)}, max {p.fmt.format(hi)})" if lo != hi else ""
                out.append(f'<rect x="{bx:.1f}" y="{base - h:.1f}" width="{BAR_W - 3}" height="{h:.1f}" '
                           f'fill="{color_of(k, colors)}"><title>{escape(str(group))}, {escape(str(k))}: '
                           f'{p.fmt.format(x)}{spread}</title></rect>')
                if lo != hi:
                    cx = bx + (BAR_W - 3) / 2
                    ylo, yhi = base - scale(lo), base - scale(hi)
                    out.append(f'<line x1="{cx:.1f}" y1="{ylo:.1f}" x2="{cx:.1f}" y2="{yhi:.1f}" stroke="black"/>')
                    for yy in (ylo, yhi):
                        out.append(f'<line x1="{cx - 3:.1f}" y1="{yy:.1f}" x2="{cx + 3:.1f}" y2="{yy:.1f}" '
                                   f'stroke="black"/>')
            label, cx = escape(str(group)), x0 + max(1, len(b)) * BAR_W / 2
            if slanted[gi]:  # too wide for its group
                out.append(f'<text x="{cx:.1f}" y="{base + 12}" text-anchor="end" '
                           f'transform="rotate(-35 {cx:.1f} {base + 12})">{label}</text>')
            else:
                out.append(f'<text x="{cx:.1f}" y="{base + 14}" text-anchor="middle">{label}</text>')
            gx += widths[gi]
        y0 += PANEL_H + PANEL_GAP + below
    lx = LEFT + plot_w + 20
    for i, (k, label) in enumerate(legend):
        y = TOP + 10 + i * 18
        out.append(f'<rect x="{lx}" y="{y}" width="12" height="12" fill="{color_of(k, colors)}"/>')
        out.append(f'<text x="{lx + 18}" y="{y + 10}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
