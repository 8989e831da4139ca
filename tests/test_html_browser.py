"""The HTML report in a real browser: headless Chromium loads it, its script runs to the end
without a console message, and the screenshot is a picture, not a blank page.

Skipped, with the reason, where Debian's ``chromium`` is not installed (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from test_scenarios import CHECKS

from pmemsim.explore import check

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (Debian: apt-get install -y chromium)"
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)


def chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(tmp)},
    )


def console(stderr: str) -> list[str]:
    """What the page printed to its console (messages and uncaught errors)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i : i + 3]) for r in rows for i in range(0, stride, channels)]


def test_report_loads_renders_and_runs_its_script(tmp_path: Path) -> None:
    c = next(c for _, _, c in CHECKS if c.name == "cmap.notify_before_persist[cache_line]")
    page = tmp_path / "report.html"
    check(c, progress=None).to_html(str(page))
    shot = tmp_path / "shot.png"
    run = chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.exists(), run.stderr[-2000:]
    assert console(run.stderr) == []
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1000)
    colors: dict[bytes, int] = {}
    for p in pixels[::7]:
        colors[p] = colors.get(p, 0) + 1
    background = max(colors.values())
    # Not blank: many colours (states, glyphs, text), much of the page not background, and
    # the report's own colours: the dirty amber and the lost red.
    assert len(colors) > 50
    assert background < 0.9 * len(pixels[::7])
    assert any(r > 200 and 150 < g < 210 and b < 40 for r, g, b in colors)  # dirty
    assert any(r > 190 and g < 30 and b < 30 for r, g, b in colors)  # lost
    # The script ran to its end (it marks the page) and left no console message.
    dom = chromium(page, tmp_path, "--dump-dom")
    assert 'data-ready="1"' in dom.stdout, dom.stderr[-2000:]
    assert console(dom.stderr) == []


def test_console_errors_are_seen(tmp_path: Path) -> None:
    """The check above can fail: a page whose script throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    run = chromium(page, tmp_path, "--dump-dom")
    assert any("undefinedFunction" in line for line in console(run.stderr))


PROBE = """
<script>
(function () {
  var out = [];
  var tl = document.querySelector(".timeline");
  var body = tl.querySelector("svg.tl-body");
  var data = JSON.parse(document.getElementById("data-" + tl.getAttribute("data-tl")).textContent);
  var lost = body.querySelector(".g-s.lost, .g-s.torn");
  var op = lost.getAttribute("data-op");
  var col = data.cols.filter(function (c) { return String(c[2]) === op; })[0];
  var m = body.getScreenCTM();
  var x = m.a * (col[0] + col[1] / 2) + m.e, y = m.d * (+lost.getAttribute("y") + 4) + m.f;
  lost.dispatchEvent(new MouseEvent("mousemove", {clientX: x, clientY: y, bubbles: true}));
  var tip = document.querySelector(".tip");
  out.push("tip=" + (tip.style.display === "block" ? tip.textContent : "hidden"));
  var hot = document.querySelector("li.hot");
  out.push("hot=" + (hot ? hot.id : "none"));
  var before = +body.getAttribute("width");
  tl.querySelector('[data-zoom="1.25"]').click();
  out.push("zoom=" + (+body.getAttribute("width") / before).toFixed(2));
  document.body.setAttribute("data-probe", out.join("|"));
})();
</script>
"""


def test_hover_shows_the_operation_and_lights_its_code(tmp_path: Path) -> None:
    c = next(c for _, _, c in CHECKS if c.name == "append_log: record and tail under one fence")
    text = check(c, progress=None).to_html()
    page = tmp_path / "probe.html"
    page.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = chromium(page, tmp_path, "--dump-dom", "--window-size=1400,1000")
    assert console(dom.stderr) == []
    probe = dom.stdout.split('data-probe="', 1)[1].split('"', 1)[0]
    tip, hot, zoom = probe.split("|")
    # The lost store's details: its kind, where it was stored, its fate.
    assert tip.startswith("tip=#0 store") and "append_log.py:37" in tip and "torn" in tip
    assert hot.startswith("hot=c0f1-s") and hot.endswith("-37")
    assert zoom == "zoom=1.25"
