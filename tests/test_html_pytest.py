"""The pytest plugin writes an HTML report per failing crash check, names it in the failure,
and links it from pytest-html's report when that plugin is there."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

BUGGY = """
def publish(v):
    v.u64[8] = 42          # the data, never flushed
    v.u64[0] = 1           # the flag
    v.persist(0, 8)


def recover(v):
    assert v.u64[0] == 0 or v.u64[8] == 42, "flag set, data missing"


def test_publish(crash_check):
    crash_check(publish, recover)
"""

FAKE_HTML = """
import types


class Extras:
    @staticmethod
    def url(content, name=None):
        return {"format_type": "url", "content": content, "name": name}


def pytest_configure(config):
    config.pluginmanager.register(types.SimpleNamespace(extras=Extras()), "html")


def pytest_runtest_logreport(report):
    for extra in getattr(report, "extras", []):
        print("EXTRA", extra["name"], extra["content"])
"""


def test_a_failing_crash_check_writes_its_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_log=BUGGY)
    folder = pytester.path / "reports"
    result = pytester.runpytest_inprocess(f"--pmemsim-html={folder}")
    result.assert_outcomes(failed=1)
    (page,) = folder.glob("*.html")
    assert page.name == "test_log.py_test_publish.html"
    result.stdout.fnmatch_lines([f"*pmemsim: HTML report: {page}*"])
    text = html.unescape(page.read_text())
    assert 'class="tl-body"' in text and "flag set, data missing" in text
    assert "pytest test_log.py::test_publish --pmemsim-replay=0:0.40=1" in text


def test_none_writes_nothing_and_the_default_is_the_cache(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_log=BUGGY)
    result = pytester.runpytest_inprocess("--pmemsim-html=none")
    result.assert_outcomes(failed=1)
    assert "HTML report" not in result.stdout.str()
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    pages = list(Path(pytester.path / ".pytest_cache").rglob("pmemsim-html/*.html"))
    assert len(pages) == 1
    result.stdout.fnmatch_lines([f"*pmemsim: HTML report: {pages[0]}*"])


def test_linked_from_pytest_html(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_log=BUGGY)
    pytester.makeconftest(FAKE_HTML)
    result = pytester.runpytest_inprocess("-s", f"--pmemsim-html={pytester.path / 'r'}")
    result.assert_outcomes(failed=1)
    page = next((pytester.path / "r").glob("*.html"))
    result.stdout.fnmatch_lines([f"*EXTRA pmemsim crash report {page.as_uri()}"])
