"""One self-contained HTML page: the checks' summaries, and for each distinct failure its
crash, its timeline, the code beside it and what to run to replay it."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from .assets import CSS, JS
from .layout import Column, layout
from .model import Crash, Run, Summary
from .source import Sources
from .svg import Drawing, data_json, draw, op_name
from .timeline import Fate, History, fate

__all__ = ["CheckPage", "FailurePage", "page"]

#: Operations listed per folded stretch (the rest are counted).
FOLD_LIST = 200


@dataclass
class FailurePage:
    crash: Crash
    run: Run
    history: History


@dataclass
class CheckPage:
    summary: Summary
    run: Run | None = None
    failures: list[FailurePage] = field(default_factory=list)
    #: Why no timeline could be drawn (the check could not be recorded again, say).
    note: str = ""
    #: Draw the run's timeline even without a failure.
    timeline_if_consistent: bool = True


def _facts(items: list[tuple[str, str]]) -> str:
    return (
        '<dl class="facts">'
        + "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in items)
        + "</dl>"
    )


def _summary_facts(s: Summary) -> str:
    items = [
        ("verdict", s.verdict.upper()),
        ("expected", s.expected or "-"),
        ("coverage", s.coverage),
        ("crash points", f"{s.crash_points:,}"),
        ("images possible", f"{s.images_possible:,}"),
        ("distinct images checked", f"{s.images_checked:,}"),
        ("inconsistent", f"{s.inconsistent:,}"),
        ("time", f"{s.seconds:.3f} s"),
    ]
    if s.strategy:
        items.append(("strategy", s.strategy))
    if s.seed is not None:
        items.append(("seed", str(s.seed)))
    if s.granularity:
        items.append(("granularity", s.granularity))
    return _facts(items)


def _legend() -> str:
    def sw(cls: str, shape: str = "rect") -> str:
        if shape == "rect":
            inner = f'<rect class="{cls}" x="0" y="2" width="18" height="12"/>'
        elif shape == "store":
            inner = f'<rect class="{cls}" x="4" y="3" width="10" height="10"/>'
        elif shape == "nt":
            inner = f'<circle class="{cls}" cx="9" cy="8" r="5"/>'
        elif shape == "flush":
            inner = f'<path class="{cls}" d="M9 2l6 6l-6 6l-6 -6z"/>'
        elif shape == "bar":
            inner = f'<line class="{cls}" x1="9" y1="0" x2="9" y2="16"/>'
        else:
            inner = '<line class="crash" x1="9" y1="0" x2="9" y2="16"/>'
        return f'<svg width="18" height="16" viewBox="0 0 18 16">{inner}</svg>'

    items = [
        (sw("s-d"), "dirty: a store no flush covers yet"),
        (sw("s-f"), "flushed (or non-temporal), waiting for a fence"),
        (sw("s-p"), "persisted"),
        (sw("g-s", "store"), "store"),
        (sw("g-s lost", "store"), "store lost in the failing image"),
        (sw("g-s torn", "store"), "store torn at an 8-byte atom"),
        (sw("g-s kept", "store"), "in flight, kept"),
        (sw("g-nt", "nt"), "non-temporal store"),
        (sw("g-f", "flush"), "flush"),
        (sw("g-df", "flush"), "deep flush"),
        (sw("bar", "bar"), "fence (thick: deep flush)"),
        (sw("", "crash"), "the crash"),
    ]
    return (
        '<div class="legend">'
        + "".join(f"<span>{a}{escape(b)}</span>" for a, b in items)
        + "</div>"
    )


def _failure(fp: FailurePage, n: int, total: int, fid: str, f: Fate) -> str:
    c = fp.crash
    run = fp.run
    focus = set(f.lines)
    keep = {op for op, *_ in f.lost} | set(f.stores)
    lint = {i for fnd in run.findings for i in fnd.ops}
    lay = layout(run, fp.history, c.position, focus, keep, lint)
    sources = Sources(prefix=f"{fid}-")
    if c.raised_at is not None:
        sources.ref(c.raised_at, "raise", count=False)
    d = draw(run, fp.history, lay, c, f, sources, fid)
    out = [
        f'<details class="failure" open><summary>Failure {n} of {total}: '
        f"{escape(c.verdict)}</summary>",
        '<div class="crash-facts">',
        f"<p><b>{escape(c.text)}</b></p>",
    ]
    if c.markers:
        out.append(f"<p>inside the marked operation(s) {escape(' > '.join(c.markers))}</p>")
    out += [f"<p>{escape(e)}</p>" for e in c.extra]
    if f.lines:
        parts = []
        for (m, off), lf in sorted(f.lines.items()):
            name = f"{run.media[m]} " if len(run.media) > 1 else ""
            if lf.status == "reverted":
                parts.append(f"{name}+0x{off:x} reverted to its last deep-flushed content")
            else:
                parts.append(
                    f"{name}+0x{off:x} {lf.status} (lost {lf.lost_bytes} of "
                    f"{lf.in_flight_bytes} bytes in flight)"
                )
        out.append(f"<p>lines in flight: {escape('; '.join(parts))}</p>")
    else:
        out.append("<p>no store was in flight: every visible store persisted</p>")
    out.append(
        f'<div class="replay"><span>replay:</span><code>{escape(c.replay)}</code>'
        f'<button class="js-only" data-copy="{escape(c.replay)}">copy</button></div>'
    )
    err = c.error
    if err is not None:
        where = f"\nraised at {c.raised_at}" if c.raised_at is not None else ""
        text = f"{type(err).__name__}: {err}{where}"
        if c.notes:
            text += "\n" + "\n".join(c.notes)
        out.append(f'<div class="error">{escape(text)}</div>')
    elif c.verdict:
        out.append(f'<div class="error">{escape(c.verdict)}</div>')
    out.append("</div>")
    if f.mismatch:
        out.append(
            '<div class="warn">The operations recorded again do not match this crash '
            f"({escape(f.mismatch)}): the workload did something else the "
            "second time. The timeline may not show the checked run.</div>"
        )
    out.append(_timeline(d, fid, sources))
    out.append(_lost_table(run, f))
    out.append(_folds(run, lay.columns))
    out.append("</details>")
    return "\n".join(out)


def _timeline(d: Drawing, fid: str, sources: Sources) -> str:
    return (
        f'<div class="timeline" data-tl="{fid}">'
        '<div class="toolbar js-only"><button data-zoom="0.8">\u2212</button>'
        '<span class="zoom-level">100%</span><button data-zoom="1.25">+</button>'
        '<button data-zoom="0">reset</button>'
        '<span class="muted">hover for details, click an operation for its code, '
        "ctrl+wheel to zoom</span></div>"
        f'<div class="view"><div class="tl">{d.labels}<div class="tl-scroll">{d.body}</div>'
        f"{d.image}</div>"
        f'<div class="src-panel">{sources.render() or "<p class=muted>no source lines</p>"}</div>'
        f"</div>{_legend()}"
        f'<script type="application/json" id="data-{fid}">{data_json(d.data)}</script></div>'
    )


def _lost_table(run: Run, f: Fate) -> str:
    if not f.lost:
        return ""
    rows = []
    for op_i, off, size, key in f.lost:
        op = run.ops[op_i]
        where = op.where
        loc = escape(str(where)) if where is not None else "<span class=muted>unknown</span>"
        if op.frames and where is None:
            loc = escape(op.frames[0])
        state = f.stores.get(op_i, "lost")
        part = "" if size == op.length else f" (part of a {op.length}-byte store)"
        name = f"{run.media[key[0]]} " if len(run.media) > 1 else ""
        rows.append(
            f"<tr><td>{escape(op.label or f'#{op_i} {op_name(op)}')}</td>"
            f"<td class=mono>{escape(name)}+0x{off:x}, "
            f"{size} bytes{part}</td><td>{state}</td><td>{loc}</td></tr>"
        )
    return (
        "<h3>Stores the failing image lost</h3><table class=lost><tr><th>operation</th>"
        "<th>where in the pool</th><th>fate</th><th>issued at</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _folds(run: Run, columns: list[Column]) -> str:
    folds = [c for c in columns if c.fold]
    if not folds:
        return ""
    rows = []
    for c in folds:
        start, end = c.start, c.end
        rows.append(f"<tr><td colspan=2><b>operations #{start} to #{end - 1}</b></td></tr>")
        for i in range(start, min(end, start + FOLD_LIST)):
            op = run.ops[i]
            where = f" at {op.where}" if op.where is not None else ""
            at = (
                f" +0x{op.offset:x} ({op.length} bytes)"
                if op.medium >= 0 and op.kind != "fence"
                else ""
            )
            rows.append(f"<tr><td>#{i}</td><td>{escape(op_name(op) + at + where)}</td></tr>")
        if end - start > FOLD_LIST:
            rows.append(f"<tr><td></td><td>\u2026 and {end - start - FOLD_LIST:,} more</td></tr>")
    return (
        '<details class="folds"><summary>folded operations (they touch none of the lines of '
        f"this failure): {len(folds)} stretch(es)</summary><table class=folds>"
        + "".join(rows)
        + "</table></details>"
    )


def _check(cp: CheckPage, ci: int) -> str:
    s = cp.summary
    status = "" if s.expected is None else "as expected" if s.as_expected else "NOT as expected"
    out = [
        f'<section class="check" id="check-{ci}">',
        f'<h2>{escape(s.name)}: <span class="v-{s.verdict}">{s.verdict.upper()}</span> '
        f'<span class="muted">{f"({status})" if status else ""}</span></h2>',
    ]
    out += [f"<p class=muted>{escape(d)}</p>" for d in s.details if d]
    out.append(_summary_facts(s))
    if cp.note:
        out.append(f'<div class="warn">{escape(cp.note)}</div>')
    if cp.failures:
        total = len(cp.failures)
        for n, fp in enumerate(cp.failures, 1):
            fid = f"c{ci}f{n}"
            out.append(_failure(fp, n, total, fid, fate(fp.history, fp.crash)))
    elif cp.run is not None and cp.timeline_if_consistent:
        run = cp.run
        history = History.of(run)
        lay = layout(run, history, None, set(), set(), {i for f in run.findings for i in f.ops})
        fid = f"c{ci}run"
        sources = Sources(prefix=f"{fid}-")
        d = draw(run, history, lay, None, None, sources, fid)
        out.append("<h3>The run (every crash point is a triangle under the timeline)</h3>")
        out.append(_timeline(d, fid, sources))
        out.append(_folds(run, lay.columns))
    if cp.run is not None and cp.run.findings:
        out.append("<h3>Lint findings</h3><ul class=findings>")
        for f in cp.run.findings:
            out.append(f'<li class="{f.severity}">{escape(f.text)}</li>')
        out.append("</ul>")
    if s.text_report:
        out.append(
            f"<details><summary>the text report</summary><pre class=text>"
            f"{escape(s.text_report)}</pre></details>"
        )
    out.append("</section>")
    return "\n".join(out)


def _table(checks: list[CheckPage]) -> str:
    rows = []
    for i, cp in enumerate(checks):
        s = cp.summary
        cls = "" if s.as_expected else ' class="bad"'
        rows.append(
            f'<tr{cls}><td><a href="#check-{i}">{escape(s.name)}</a></td>'
            f'<td class="v-{s.verdict}">{s.verdict}</td><td>{escape(s.expected or "-")}</td>'
            f"<td>{escape(s.coverage)}</td><td>{s.crash_points:,}</td>"
            f"<td>{s.images_possible:,}</td><td>{s.images_checked:,}</td>"
            f"<td>{s.inconsistent:,}</td><td>{s.seconds:.3f}</td></tr>"
        )
    return (
        '<table class="checks"><tr><th>check</th><th>verdict</th><th>expected</th>'
        "<th>coverage</th><th>crash points</th><th>images possible</th><th>checked</th>"
        "<th>inconsistent</th><th>seconds</th></tr>" + "".join(rows) + "</table>"
    )


def page(title: str, checks: list[CheckPage], subtitle: str = "") -> str:
    """The whole report."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("pmemsim")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        v = "?"
    body = [
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="muted">{escape(subtitle)}{" - " if subtitle else ""}pmemsim {v}. '
        "A self-contained file: it works offline, and without JavaScript.</p>",
        '<div class="toolbar js-only"><button data-open="1">open all</button>'
        '<button data-open="0">close all</button></div></header>',
    ]
    if len(checks) > 1:
        body.append(_table(checks))
    body += [_check(cp, i) for i, cp in enumerate(checks)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main><script>{JS}</script></body></html>\n"
    )
