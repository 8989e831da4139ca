"""The timeline drawn as static SVG: readable as it is, with a script only adding details.

Three drawings side by side share their row positions: the line labels, the timeline
itself (it scrolls and zooms) and what the failing image kept of each line. In the
timeline a row is a line (or a range of lines), a column an operation in program order;
a row's background is the line's state after each operation (dirty, flushed, persisted),
glyphs mark the operations on the line (square: store, diamond: flush, circle: a
non-temporal store), full-height rules the fences, a dashed red rule the crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any

from .layout import Layout, Row, row_state
from .model import Crash, Operation, Run
from .source import Sources
from .timeline import DIRTY, FLUSHED, PERSISTED, Fate, History, Key

__all__ = ["Drawing", "draw"]

COL = 22
FOLD = 50
ROW = 24
GAP = 12
MARK = 14
LABELS = 150
HEAD = 96
AXIS = 34
LEFT = 176
RIGHT = 150
GLYPH = 11

_STATE_CLASS = {DIRTY: "s-d", FLUSHED: "s-f", PERSISTED: "s-p"}
_STATE_WORD = {DIRTY: "dirty", FLUSHED: "flushed, waiting for a fence", PERSISTED: "persisted"}


@dataclass
class Drawing:
    labels: str
    body: str
    image: str
    data: dict[str, Any]


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def op_name(op: Operation) -> str:
    if op.kind == "marker":
        return f"{op.marker}.{'BEGIN' if op.begin else 'END'}"
    if op.label:
        return op.label
    if op.kind == "store" and op.nontemporal:
        return "nt store"
    return op.kind.replace("_", " ")


def short_where(run_files: int, op: Operation) -> str:
    w = op.where
    if w is None:
        return ""
    name = w.file.rsplit("/", 1)[-1]
    return f" :{w.line}" if run_files <= 1 else f" {name}:{w.line}"


def draw(
    run: Run,
    history: History,
    lay: Layout,
    crash: Crash | None,
    fate: Fate | None,
    sources: Sources,
    tid: str,
) -> Drawing:
    cols = lay.columns
    rows = lay.rows
    xs: list[int] = []
    x = 0
    for c in cols:
        xs.append(x)
        x += FOLD if c.fold else COL
    width = x + 12
    depth = _marker_depth(run)
    # A band for the crash's label, then one for each level of nested markers.
    mark_h = MARK * max(depth, 1) + 16
    top = mark_h + HEAD
    ys: list[int] = []
    y = top
    for r in rows:
        ys.append(y)
        y += GAP if r.kind == "gap" else ROW
    bottom = y
    height = bottom + AXIS
    files = len({(o.where.file) for o in run.ops if o.where is not None})

    def col_of(position: int) -> float:
        for c, cx in zip(cols, xs, strict=True):
            if c.start >= position:
                return cx
            if c.start < position < c.end:
                return cx + (FOLD if c.fold else COL) / 2
        return x

    body: list[str] = []
    add = body.append
    add(
        f'<svg class="tl-body" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" data-tl="{tid}" role="img" '
        f'aria-label="timeline of the lines the workload wrote">'
    )
    add(
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f1f1f4"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#d5d5de" stroke-width="2"/></pattern></defs>'
    )
    # Row stripes, so that a row can be followed across the page.
    for r, ry in zip(rows, ys, strict=True):
        if r.kind == "gap":
            add(f'<rect class="gap" x="0" y="{ry}" width="{width}" height="{GAP}"/>')
        elif r.focus:
            add(f'<rect class="focus" x="0" y="{ry}" width="{width}" height="{ROW}"/>')
    # Folded stretches.
    for c, cx in zip(cols, xs, strict=True):
        if c.fold:
            add(
                f'<rect class="fold" x="{cx}" y="{mark_h}" width="{FOLD}" '
                f'height="{bottom - mark_h}" '
                f'data-fold="{c.start}-{c.end}"><title>{c.count} operations (#{c.start} to '
                f"#{c.end - 1}) folded: {escape(_fold_summary(run, c.start, c.end))}</title></rect>"
            )
            add(
                f'<text class="fold-t" transform="translate({cx + FOLD / 2 + 4},{top - 6}) '
                f'rotate(-90)">\u22ef {c.count:,} ops</text>'
            )
    # Line states: one rectangle per run of columns in one state.
    for r, ry in zip(rows, ys, strict=True):
        if r.kind == "gap":
            continue
        run_state = ""
        run_x = 0
        for n in range(len(cols) + 1):
            cx = xs[n] if n < len(cols) else x
            st = row_state(history, r, cols[n].end - 1) if n < len(cols) else ""
            if n < len(cols) and st == run_state:
                continue
            if run_state:
                add(
                    f'<rect class="{_STATE_CLASS[run_state]}" x="{run_x}" y="{ry + 2}" '
                    f'width="{cx - run_x}" height="{ROW - 4}"/>'
                )
            run_state, run_x = st, cx
    # Fences and deep flushes: rules across every row.
    for c, cx in zip(cols, xs, strict=True):
        if c.fold:
            continue
        op = run.ops[c.start]
        if op.kind in ("fence", "deep_flush"):
            cls = "bar" if op.kind == "fence" else "bar deep"
            add(
                f'<line class="{cls}" x1="{cx + COL / 2}" y1="{top - 2}" x2="{cx + COL / 2}" '
                f'y2="{bottom}" data-op="{c.start}"/>'
            )
    # Glyphs of the operations on each row.
    row_of: dict[Key, int] = {}
    for ri, r in enumerate(rows):
        for k in r.keys:
            row_of[k] = ri
    stores = fate.stores if fate else {}
    for c, cx in zip(cols, xs, strict=True):
        if c.fold:
            continue
        i = c.start
        op = run.ops[i]
        targets = sorted({row_of[k] for k in lay.lines_of.get(i, ()) if k in row_of})
        for ri in targets:
            add(_glyph(op, i, cx + COL / 2, ys[ri] + ROW / 2, stores.get(i)))
    # After the crash: faded, nothing there happened in the failing image.
    if crash is not None:
        after = col_of(crash.position)
        if after < x:
            add(
                f'<rect class="after" x="{_f(after)}" y="{mark_h}" width="{_f(x - after + 12)}" '
                f'height="{bottom - mark_h}"/>'
            )
    # Column headings: the operation and the source line that issued it.
    for c, cx in zip(cols, xs, strict=True):
        if c.fold:
            continue
        op = run.ops[c.start]
        where = op.where
        src = sources.ref(where, op.kind) if where is not None else ""
        text = f"{op_name(op)}{short_where(files, op)}"
        detail = f"#{c.start} {op_name(op)}"
        if op.medium >= 0 and op.kind != "fence":
            detail += f" {run.media[op.medium]} +0x{op.offset:x} ({op.length} bytes)"
        if where is not None:
            detail += f" at {where}"
        fate_word = stores.get(c.start)
        if fate_word:
            detail += f"; in flight at the crash: {fate_word} in the failing image"
            if fate_word != "kept" and where is not None:
                sources.ref(where, fate_word, count=False)
            elif where is not None:
                sources.ref(where, "flight", count=False)
        add(
            f'<text class="h h-{op.kind}{" h-" + fate_word if fate_word else ""}" '
            f'transform="translate({cx + COL / 2 + 4},{top - 6}) rotate(-90)" data-op="{c.start}"'
            f"{f' data-src={chr(34)}{src}{chr(34)}' if src else ''}><title>{escape(detail)}</title>"
            f"{escape(text)}</text>"
        )
    _markers(run, cols, xs, add, mark_h, bottom)
    # The axis: operation numbers, crash points, lint findings.
    for n, (c, cx) in enumerate(zip(cols, xs, strict=True)):
        if c.fold:
            add(
                f'<text class="ax" x="{cx + FOLD / 2}" y="{bottom + 12}">'
                f"{c.start}\u2013{c.end - 1}</text>"
            )
        elif c.start % 5 == 0 or n == 0 or n == len(cols) - 1:
            add(f'<text class="ax" x="{cx + COL / 2}" y="{bottom + 12}">{c.start}</text>')
    # Crash points: a triangle each where operations are shown; a folded stretch counts its
    # own (a long run has thousands).
    folded: dict[int, int] = {}
    for p in run.points:
        fold = next((n for n, c in enumerate(cols) if c.fold and c.start < p.position < c.end), -1)
        if fold >= 0:
            folded[fold] = folded.get(fold, 0) + 1
            continue
        px = col_of(p.position)
        cls = "pt fail" if crash is not None and p.index == crash.point else "pt"
        add(
            f'<path class="{cls}" d="M{_f(px)} {bottom + 16}l-4 7h8z">'
            f"<title>{escape(p.text)}</title></path>"
        )
    for n, count in folded.items():
        add(
            f'<text class="ax" x="{xs[n] + FOLD / 2}" y="{bottom + 24}">\u25b3{count}'
            f"<title>{count} crash points in these operations</title></text>"
        )
    x_of_op = {c.start: cx for c, cx in zip(cols, xs, strict=True) if not c.fold}
    for f in run.findings:
        for i in f.ops:
            if i not in x_of_op:
                continue
            add(
                f'<text class="lint lint-{f.severity}" x="{x_of_op[i] + COL / 2}" '
                f'y="{bottom + 32}" data-op="{i}">\u25b2<title>{escape(f.text)}</title></text>'
            )
            where = run.ops[i].where
            if where is not None:
                sources.ref(where, "lint", count=False)
    if crash is not None:
        cx_crash = col_of(crash.position)
        add(
            f'<line class="crash" x1="{_f(cx_crash)}" y1="2" x2="{_f(cx_crash)}" '
            f'y2="{bottom + 4}"/>'
        )
        label = f"\u26a1 crash point {crash.point}"
        anchor = "end" if cx_crash > width - 140 else "start"
        dx = -4 if anchor == "end" else 4
        add(
            f'<text class="crash-t" x="{_f(cx_crash + dx)}" y="12" '
            f'text-anchor="{anchor}">'
            f"{escape(label)}<title>{escape(crash.text)}</title></text>"
        )
    add("</svg>")
    labels = _labels(rows, ys, mark_h, top, height)
    image = _image(rows, ys, top, height, fate, crash is not None)
    data: dict[str, Any] = {
        "crash": col_of(crash.position) if crash is not None else None,
        "cols": [
            [cx, FOLD if c.fold else COL, c.start, c.end] for c, cx in zip(cols, xs, strict=True)
        ],
        "rows": [
            [ry, GAP if r.kind == "gap" else ROW, r.label] for r, ry in zip(rows, ys, strict=True)
        ],
        "ops": {
            str(c.start): _op_data(run, c.start, stores.get(c.start), sources)
            for c in cols
            if not c.fold
        },
    }
    return Drawing(labels, "".join(body), image, data)


def _glyph(op: Operation, i: int, cx: float, cy: float, fate: str | None) -> str:
    h = GLYPH / 2
    cls = ""
    if fate:
        cls = f" {fate}"
    if op.kind == "store":
        if op.nontemporal:
            return f'<circle class="g-nt{cls}" cx="{_f(cx)}" cy="{_f(cy)}" r="{h}" data-op="{i}"/>'
        return (
            f'<rect class="g-s{cls}" x="{_f(cx - h)}" y="{_f(cy - h)}" width="{GLYPH}" '
            f'height="{GLYPH}" data-op="{i}"/>'
        )
    cls = "g-f" if op.kind == "flush" else "g-df"
    return (
        f'<path class="{cls}" d="M{_f(cx)} {_f(cy - h - 1)}l{h + 1} {h + 1}l-{h + 1} {h + 1}'
        f'l-{h + 1} -{h + 1}z" data-op="{i}"/>'
    )


def _marker_depth(run: Run) -> int:
    depth = best = 0
    for op in run.ops:
        if op.kind == "marker":
            depth += 1 if op.begin else -1
            best = max(best, depth)
    return min(best, 4)


def _markers(run: Run, cols: list[Any], xs: list[int], add: Any, mark_h: int, bottom: int) -> None:
    """A bar per marked operation over its columns, nested ones below their parents."""
    x_of = {}
    for c, cx in zip(cols, xs, strict=True):
        for i in range(c.start, c.end):
            x_of[i] = cx + (COL / 2 if not c.fold else FOLD * (i - c.start + 0.5) / c.count)
    stack: list[tuple[int, str]] = []
    for i, op in enumerate(run.ops):
        if op.kind != "marker":
            continue
        if op.begin:
            stack.append((i, op.marker))
            continue
        if not stack:
            continue
        b, name = stack.pop()
        level = len(stack)
        if level >= 4:
            continue
        x1, x2 = x_of.get(b, 0), x_of.get(i, 0)
        y = 16 + level * MARK + 1
        add(
            f'<g class="mk"><rect x="{_f(x1)}" y="{y}" width="{_f(max(x2 - x1, 4))}" '
            f'height="{MARK - 3}" rx="3"/><text x="{_f(x1 + 3)}" y="{y + MARK - 6}">'
            f"{escape(name)}</text><title>marker {escape(name)}: operations #{b} to #{i}"
            f"</title></g>"
        )


def _fold_summary(run: Run, start: int, end: int) -> str:
    counts: dict[str, int] = {}
    for op in run.ops[start:end]:
        counts[op.kind] = counts.get(op.kind, 0) + 1
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items()))


def _labels(rows: list[Row], ys: list[int], mark_h: int, top: int, height: int) -> str:
    out = [
        f'<svg class="tl-labels" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {LEFT} {height}" '
        f'width="{LEFT}" height="{height}">',
        f'<text class="corner" x="{LEFT - 8}" y="{top - 22}" text-anchor="end">'
        "operations \u2192</text>",
        f'<text class="corner" x="8" y="{top - 6}">line \u2193</text>',
    ]
    for r, ry in zip(rows, ys, strict=True):
        if r.kind == "gap":
            out.append(
                f'<text class="lb gap-t" x="{LEFT - 8}" y="{ry + GAP - 3}" text-anchor="end">'
                f"{escape(r.label)}<title>{escape(r.title)}</title></text>"
            )
            continue
        cls = "lb focus-t" if r.focus else ("lb group-t" if r.kind == "group" else "lb")
        title = f"<title>{escape(r.title)}</title>" if r.title else ""
        out.append(
            f'<text class="{cls}" x="{LEFT - 8}" y="{ry + ROW / 2 + 4}" text-anchor="end">'
            f"{escape(r.label)}{title}</text>"
        )
    out.append("</svg>")
    return "".join(out)


_FATE_WORD = {
    "kept": "kept all {n} B",
    "lost": "lost {k} of {n} B",
    "torn": "torn: lost {k} of {n} B",
    "reverted": "reverted",
}


def _image(
    rows: list[Row], ys: list[int], top: int, height: int, fate: Fate | None, crashed: bool
) -> str:
    out = [
        f'<svg class="tl-image" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {RIGHT} {height}" '
        f'width="{RIGHT}" height="{height}">'
    ]
    if crashed:
        out.append(f'<text class="corner" x="8" y="{top - 22}">in the failing</text>')
        out.append(f'<text class="corner" x="8" y="{top - 6}">image</text>')
    for r, ry in zip(rows, ys, strict=True):
        if r.kind == "gap" or fate is None:
            continue
        fates = [fate.lines[k] for k in r.keys if k in fate.lines]
        if any(k in fate.bad for k in r.keys):
            out.append(
                f'<rect class="im-bg im-bad" x="4" y="{ry + 3}" width="{RIGHT - 10}" '
                f'height="{ROW - 6}" rx="4"/><text class="im im-bad" x="10" '
                f'y="{ry + ROW / 2 + 4}">bad block: zeros<title>in the bad block the fault adds: '
                f"its content is lost (cleared, it reads as zeros)</title></text>"
            )
            continue
        if not fates:
            out.append(
                f'<text class="im im-none" x="8" y="{ry + ROW / 2 + 4}">nothing in flight'
                f"<title>no store to this line was in flight at the crash: it holds what "
                f"was persisted</title></text>"
            )
            continue
        worst = max(fates, key=lambda lf: ("kept", "lost", "torn", "reverted").index(lf.status))
        n = sum(lf.in_flight_bytes for lf in fates)
        k = sum(lf.lost_bytes for lf in fates)
        word = _FATE_WORD[worst.status].format(n=n, k=k)
        out.append(
            f'<rect class="im-bg im-{worst.status}" x="4" y="{ry + 3}" width="{RIGHT - 10}" '
            f'height="{ROW - 6}" rx="4"/><text class="im im-{worst.status}" x="10" '
            f'y="{ry + ROW / 2 + 4}">{escape(word)}<title>{n} bytes of stores in flight at the '
            f"crash; the failing image lost {k} of them</title></text>"
        )
    out.append("</svg>")
    return "".join(out)


def _op_data(run: Run, i: int, fate: str | None, sources: Sources) -> dict[str, Any]:
    op = run.ops[i]
    d: dict[str, Any] = {"k": op_name(op)}
    if op.medium >= 0 and op.kind != "fence":
        d["m"] = run.media[op.medium]
        d["o"] = f"+0x{op.offset:x}"
        d["n"] = op.length
    if op.data:
        shown = op.data[:16]
        d["v"] = "0x" + shown[::-1].hex() + ("\u2026" if len(op.data) > 16 else "")
    if op.stack:
        d["w"] = [str(w) for w in op.stack]
        d["s"] = sources.id(op.stack[0])
    if op.frames:
        d["fr"] = list(op.frames[:6])
    if fate:
        d["f"] = fate
    return d


def data_json(d: dict[str, Any]) -> str:
    # "</" must not end the script element that holds it.
    return json.dumps(d, separators=(",", ":")).replace("</", "<\\/")
