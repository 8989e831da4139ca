"""The code of the lines that issued stores, flushes and fences, shown beside the timeline.

Python frames name their file exactly. Frames of a pmemcheck log look like
``0x109557: main (t.c:17)`` or ``write_record (append_log.py:37)``; their file is looked
for as written, then beside the log, then in the current folder. A file that cannot be read
still gets its ``file:line`` (and the report says the code is not at hand).
"""

from __future__ import annotations

import html
import linecache
import os
import re
from dataclasses import dataclass, field

from .model import Where

__all__ = ["Sources", "parse_frame"]

_FRAME = re.compile(
    r"^\s*(?:0x[0-9a-fA-F]+:\s*)?(?P<fn>[^()]*?)\s*\((?P<file>[^():]+):(?P<line>\d+)\)"
)
#: Lines of context around each line shown.
CONTEXT = 1
#: At most this many lines per file (a workload spread over a large file stays readable).
MAX_LINES = 400


def parse_frame(frame: str, search: tuple[str, ...] = ()) -> Where | None:
    """A log's stack frame as a location; None when it names no ``file:line``."""
    m = _FRAME.match(frame)
    if m is None:
        return None
    name = m["file"].strip()
    path = None
    for base in ("", *search):
        candidate = os.path.join(base, name) if base else name
        if os.path.isfile(candidate):
            path = os.path.abspath(candidate)
            break
    return Where(name, int(m["line"]), m["fn"].strip(), path)


@dataclass
class _File:
    shown: str
    path: str | None
    index: int
    #: line -> roles ("store", "flush", "fence", "lost", "torn", "flight", "raise", "lint")
    lines: dict[int, set[str]] = field(default_factory=dict)
    #: line -> counts of operations per kind
    counts: dict[int, dict[str, int]] = field(default_factory=dict)


class Sources:
    """Code locations referenced by one timeline, with what happened at each."""

    def __init__(self, prefix: str = "") -> None:
        #: Makes the ids of this listing unique in the page.
        self.prefix = prefix
        self.files: dict[tuple[str, str | None], _File] = {}

    def ref(self, where: Where, role: str, count: bool = True) -> str:
        """Note ``where`` in ``role``; returns the id of its line in the listing."""
        key = (where.file, where.path)
        f = self.files.get(key)
        if f is None:
            f = self.files[key] = _File(where.file, where.path, len(self.files))
        f.lines.setdefault(where.line, set()).add(role)
        if count:
            c = f.counts.setdefault(where.line, {})
            c[role] = c.get(role, 0) + 1
        return self.id(where)

    def id(self, where: Where) -> str:
        f = self.files.get((where.file, where.path))
        return f"{self.prefix}s{f.index}-{where.line}" if f else ""

    def render(self) -> str:
        out = []
        for f in self.files.values():
            out.append(_render_file(f, self.prefix))
        return "\n".join(out)


def _code(path: str | None, line: int) -> str | None:
    if path is None:
        return None
    text = linecache.getline(path, line)
    return text.rstrip("\n") if text else None


_BADGE = {
    "lost": "lost",
    "torn": "torn",
    "flight": "in flight",
    "raise": "recovery raised",
    "lint": "lint",
}


def _render_file(f: _File, prefix: str) -> str:
    wanted = sorted(f.lines)[:MAX_LINES]
    readable = f.path is not None and _code(f.path, wanted[0]) is not None if wanted else False
    head = html.escape(f.shown)
    if not readable:
        items = "".join(
            f'<li id="{prefix}s{f.index}-{n}" class="{_classes(f.lines[n])}">'
            f'<span class="ln">{n}</span>{_badges(f, n)}</li>'
            for n in wanted
        )
        return (
            f'<div class="src-file"><div class="src-name">{head} '
            f'<span class="muted">(source not found here)</span></div>'
            f'<ol class="src src-missing">{items}</ol></div>'
        )
    show: list[int] = []
    for n in wanted:
        for k in range(max(1, n - CONTEXT), n + CONTEXT + 1):
            if not show or k > show[-1]:
                show.append(k)
    rows = []
    prev = 0
    for n in show:
        code = _code(f.path, n)
        if code is None:
            continue
        if prev and n > prev + 1:
            rows.append('<li class="skip"><span class="ln">\u22ee</span></li>')
        prev = n
        roles = f.lines.get(n)
        ident = f"{prefix}s{f.index}-{n}"
        attrs = (
            f' id="{ident}" class="{_classes(roles)}" data-src="{ident}"'
            if roles
            else ' class="ctx"'
        )
        rows.append(
            f'<li{attrs}><span class="ln">{n}</span><code>{html.escape(code) or " "}</code>'
            f"{_badges(f, n) if roles else ''}</li>"
        )
    return (
        f'<div class="src-file"><div class="src-name">{head}</div>'
        f'<ol class="src">{"".join(rows)}</ol></div>'
    )


def _classes(roles: set[str]) -> str:
    out = ["ref"]
    for r in ("lost", "torn", "flight", "raise", "lint"):
        if r in roles:
            out.append(f"src-{r}")
    return " ".join(out)


def _badges(f: _File, n: int) -> str:
    roles = f.lines.get(n, set())
    counts = f.counts.get(n, {})
    out = []
    for kind in ("store", "flush", "fence", "deep_flush", "marker"):
        c = counts.get(kind)
        if c:
            word = kind.replace("_", " ")
            if c > 1:
                word += "es" if word.endswith("sh") else "s"
            out.append(f'<span class="b b-{kind}">{c} {word}</span>')
    for r, text in _BADGE.items():
        if r in roles:
            out.append(f'<span class="b b-{r}">{text}</span>')
    return f'<span class="badges">{"".join(out)}</span>' if out else ""
