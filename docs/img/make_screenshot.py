"""Regenerate docs/img/html-report.png, the README's picture of an HTML report.

Renders the report of one catalogue bug (the append log whose record and tail share one
fence) and has headless Chromium (Debian's ``chromium`` package) take a screenshot of it:

    python docs/img/make_screenshot.py              # writes docs/img/html-report.png
    python docs/img/make_screenshot.py --html out.html   # also keep the page
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = "append_log: record and tail under one fence"
SIZE = (1500, 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "html-report.png"))
    ap.add_argument("--html", help="also write the page here")
    args = ap.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium here (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    from pmemsim.cli import load_checks
    from pmemsim.explore import check

    os.chdir(ROOT)  # paths in the report relative to the repository
    (c,) = load_checks("scenarios/append_log.py", [CHECK])
    result = check(c, name=f"scenarios/append_log.py::{CHECK}", progress=None)
    result.name = CHECK
    with tempfile.TemporaryDirectory(prefix="pmemsim-shot-") as tmp:
        page = Path(args.html).absolute() if args.html else Path(tmp) / "report.html"
        result.to_html(str(page))
        run = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={tmp}/profile",
                f"--window-size={SIZE[0]},{SIZE[1]}",
                f"--screenshot={args.out}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if run.returncode != 0 or not Path(args.out).exists():
        print(run.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
