"""Hand-written SVG charts: a document, text, axes, and two kinds of panel (grouped bars,
stacked bars). No dependencies; the text widths are estimates good enough for layout."""
import html
import math

COLORS = {
    "ours": "#2b6cb0",
    "llama.cpp": "#dd6b20",
    "ours --low-mem": "#38a169",
    "ceiling": "#a0aec0",
}


def esc(s) -> str:
    return html.escape(str(s), quote=True)


def nice_max(v: float) -> tuple[float, float]:
    """An axis maximum >= v and a tick step (1, 2 or 5 times a power of ten)."""
    if v <= 0:
        return 1.0, 0.2
    raw = v / 5
    p = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * p:
            step = m * p
            break
    return step * math.ceil(v / step - 1e-9), step


def tick_fmt(x: float, step: float) -> str:
    """A tick label with as many decimals as the step needs."""
    if step >= 1:
        return f"{x:.0f}"
    digits = max(0, -math.floor(math.log10(step)) + (1 if step * 10 ** -math.floor(math.log10(step)) not in (1, 2, 5) else 0))
    return f"{x:.{digits}f}"


def svg_doc(width: int, height: int, body: str, title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" '
            f'font-size="13">\n<title>{esc(title)}</title>\n'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n{body}</svg>\n')


def svg_text(x, y, s, size=13, anchor="start", weight="normal", fill="#1a202c", extra="") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}" {extra}>{esc(s)}</text>\n')


def text_width(s: str, size: float = 12) -> float:
    return 0.56 * size * len(s)  # Helvetica/Arial average advance, good enough for layout


def wrap(line: str, width: float, size: float = 12) -> list[str]:
    """Splits a line at spaces into lines that fit `width` pixels."""
    out, cur = [], ""
    for word in line.split(" "):
        if cur and text_width(cur + " " + word, size) > width:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return out + [cur]


def header(w: float, title: str, subtitles: list[str], items: list[tuple[str, str, str]],
           left: float) -> tuple[str, float]:
    """Title, subtitle lines and a legend row (wrapped) of (name, color, style) items, style one
    of "fill", "outline", "dash" (a dashed line). Returns the SVG and the y where the plot starts."""
    out = svg_text(left, 22, title, 15, weight="bold")
    y = 22
    for line in (part for sub in subtitles for part in wrap(sub, w - left - 8)):
        y += 17
        out += svg_text(left, y, line, 12, fill="#4a5568")
    y += 24
    x = left
    for name, color, style in items:
        need = 17 + text_width(name) + 20
        if x + need > w - 8 and x > left:
            x, y = left, y + 18
        if style == "outline":
            out += (f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="#ffffff" '
                    f'stroke="{color}" stroke-width="2" stroke-dasharray="3,2"/>\n')
        elif style == "dash":
            out += (f'<line x1="{x:.1f}" x2="{x + 12:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" '
                    f'stroke="{color}" stroke-width="1.5" stroke-dasharray="4,2"/>\n')
        else:
            out += f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{color}"/>\n'
        out += svg_text(x + 17, y, name, 12)
        x += need
    return out, y + 16


def axes(left: float, top: float, pw: float, ph: float, vmax: float, step: float, unit: str) -> str:
    """Horizontal grid lines with their tick labels, and the unit written up the left side."""
    out = ""
    tick = 0.0
    while tick <= vmax + 1e-9:
        y = top + ph - ph * tick / vmax
        out += f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>\n'
        out += svg_text(left - 6, y + 4, tick_fmt(tick, step), 11, "end", fill="#4a5568")
        tick += step
    out += (f'<text x="16" y="{top + ph / 2:.1f}" font-size="12" text-anchor="middle" fill="#4a5568" '
            f'transform="rotate(-90 16 {top + ph / 2:.1f})">{esc(unit)}</text>\n')
    return out


def frame(left: float, top: float, pw: float, ph: float) -> str:
    """The x and y axis lines of a plot area."""
    return (f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#1a202c"/>\n'
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#1a202c"/>\n')


def bar_panel(x0, y0, w, h, title, groups, series, unit, vfmt, ref=None, ref_label="",
              outline=frozenset(), subtitles=()) -> str:
    """Grouped vertical bars with their values on top. series: [(name, color, [value or None per
    group])]; names in `outline` are drawn as dashed outlines; `ref` draws a dashed line."""
    left, bottom, right = 66, 50, 16
    items = [(n, c, "outline" if n in outline else "fill") for n, c, _ in series]
    if ref is not None:
        items.append((ref_label or f"{ref:g}", "#1a202c", "dash"))
    head, top = header(w, title, list(subtitles), items, left)
    pw, ph = w - left - right, h - top - bottom
    vals = [v for _, _, vs in series for v in vs if v is not None]
    vmax, step = nice_max(max(vals + ([ref] if ref else []) + [1e-9]) * 1.1)
    out = f'<g transform="translate({x0},{y0})">\n' + head + axes(left, top, pw, ph, vmax, step, unit)
    gw = pw / max(1, len(groups))
    bw = min(64.0, gw * 0.8 / max(1, len(series)))
    for gi, g in enumerate(groups):
        present = [(name, color, vs[gi]) for name, color, vs in series if vs[gi] is not None]
        gx = left + gi * gw + (gw - bw * len(present)) / 2
        for si, (name, color, v) in enumerate(present):
            bh = ph * v / vmax
            x, y = gx + si * bw, top + ph - bh
            if name in outline:
                out += (f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                        f'fill="#ffffff" stroke="{color}" stroke-width="2" stroke-dasharray="4,3"/>\n')
            else:
                out += (f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                        f'fill="{color}"/>\n')
            label = vfmt.format(v)
            if text_width(label, 11) <= bw - 2:
                out += svg_text(x + bw / 2, y - 4, label, 11, "middle")
            else:  # too narrow for the value: written upwards from the top of the bar
                cx, cy = x + bw / 2 + 4, y - 4
                out += svg_text(cx, cy, label, 11, "start",
                                extra=f'transform="rotate(-90 {cx:.1f} {cy:.1f})"')
        for li, line in enumerate(str(g).split("\n")):
            out += svg_text(left + gi * gw + gw / 2, top + ph + 18 + 14 * li, line, 12, "middle")
    if ref is not None:
        y = top + ph - ph * ref / vmax
        out += (f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#1a202c" '
                f'stroke-width="1.5" stroke-dasharray="6,4"/>\n')
    return out + frame(left, top, pw, ph) + "</g>\n"


def stacked_panel(x0, y0, w, h, title, bars, components, unit, subtitles=()) -> str:
    """Vertical stacked bars. bars: [(label, [component values], total)]; when the total exceeds
    the sum of the components the rest is drawn as a pale "other" segment; the total is written
    on top."""
    left, bottom, right = 66, 50, 16
    head, top = header(w, title, list(subtitles), [(n, c, "fill") for n, c in components], left)
    pw, ph = w - left - right, h - top - bottom
    totals = [max(t or 0, sum(c or 0 for c in cs)) for _, cs, t in bars]
    vmax, step = nice_max(max(totals + [1e-9]) * 1.1)
    out = f'<g transform="translate({x0},{y0})">\n' + head + axes(left, top, pw, ph, vmax, step, unit)
    gw = pw / max(1, len(bars))
    bw = min(96.0, gw * 0.6)
    unit_short = {"seconds": "s"}.get(unit, unit)
    for gi, (label, cs, total) in enumerate(bars):
        x = left + gi * gw + (gw - bw) / 2
        acc = 0.0
        for (name, color), v in zip(components, cs):
            if not v:
                continue
            bh = ph * v / vmax
            y = top + ph - ph * (acc + v) / vmax
            out += f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{color}"/>\n'
            if bh > 15:
                out += svg_text(x + bw / 2, y + bh / 2 + 4, f"{v:.2f}", 11, "middle", fill="#ffffff")
            acc += v
        if total is not None:
            ty = top + ph - ph * max(total, acc) / vmax
            if total > acc:
                out += (f'<rect x="{x:.1f}" y="{ty:.1f}" width="{bw:.1f}" '
                        f'height="{ph * (total - acc) / vmax:.1f}" fill="{components[-1][1]}"/>\n')
            out += svg_text(x + bw / 2, ty - 6, f"{total:.2f} {unit_short}", 12, "middle", weight="bold")
        for li, line in enumerate(str(label).split("\n")):
            out += svg_text(left + gi * gw + gw / 2, top + ph + 18 + 14 * li, line, 12, "middle")
    return out + frame(left, top, pw, ph) + "</g>\n"
