"""What ``pmemsim check`` found, per check, and the files CI reads: JSON and JUnit XML."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .common import describe_error, user_frame, write_output

if TYPE_CHECKING:
    from ..explore import CheckResult, Failure
    from ..explore.report import FailedCrash

__all__ = ["Outcome", "write_json", "write_junit"]

Status = Literal["passed", "failed", "error"]


@dataclass
class Outcome:
    """One row of the table: a check's result, or why it could not run."""

    name: str
    origin: str
    result: CheckResult | None = None
    #: Why it could not run (with ``error``, the exception, when there was one).
    what: str = ""
    error: BaseException | None = None

    @property
    def status(self) -> Status:
        if self.result is None:
            return "error"
        return "passed" if self.result.as_expected else "failed"

    @property
    def ref(self) -> str:
        return f"{self.origin}::{self.name}"

    def problem(self, *, verbose: bool = False) -> str:
        """For an ERROR row: what went wrong, the exception, and the user's line."""
        out = [f"{self.name} ({self.origin}): {self.what}"]
        if self.error is not None:
            out.append(f"  {describe_error(self.error)}")
            where = user_frame(self.error)
            if where:
                out.append(f"  at {where}")
            if verbose:
                out += ["  " + ln for ln in _traceback(self.error).rstrip().splitlines()]
        return "\n".join(out)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


# -- JSON ----------------------------------------------------------------------------------


def _where(prov: Any) -> list[dict[str, Any]]:
    from ..provenance import locations

    return [{"file": x.filename, "line": x.lineno, "function": x.function} for x in locations(prov)]


def _lost(lines: Any, lost: Any, source: Any) -> dict[str, list[dict[str, Any]]]:
    return {
        "lines": [
            {
                "source": source(x.medium),
                "offset": x.offset,
                "in_flight": x.in_flight,
                "lost": x.lost,
                "reverted": x.reverted,
            }
            for x in lines
        ],
        "lost_stores": [
            {
                "source": source(s.medium),
                "offset": s.offset,
                "length": s.length,
                "stored_at": _where(s.provenance),
            }
            for s in lost
        ],
    }


def _failed(c: FailedCrash) -> dict[str, Any]:
    """One inconsistent crash of every one a check found (sources by number: a program's
    files may be numbered differently at different crash points)."""
    kind, at = c.signature
    return {
        "crash": c.token,
        "faults": list(c.crash.faults),
        **_lost(c.lines, c.lost, lambda medium: medium),
        "verdict": c.kind,
        "error": {"type": kind, "message": c.message, "raised_at": at},
    }


def _failure(f: Failure) -> dict[str, Any]:
    def source(medium: int) -> str | int:
        return f.sources[medium] if medium < len(f.sources) else medium

    return {
        "token": f.token,
        "crash": str(f.crash),
        "recovery_crashes": [str(c) for c in f.recovery_crashes],
        "faults": list(f.crash.faults),
        "crash_point": {
            "index": f.point.index,
            "kind": f.point.kind,
            "position": f.point.position,
            "markers": list(f.point.markers),
            "at": _where(f.point.provenance),
        },
        **_lost(f.lines, f.lost, source),
        "error": {"type": type(f.error).__name__, "message": str(f.error)},
    }


def _error(o: Outcome) -> dict[str, Any] | None:
    if o.status != "error":
        return None
    out: dict[str, Any] = {"what": o.what}
    if o.error is not None:
        out.update(
            type=type(o.error).__name__,
            message=describe_error(o.error).split(": ", 1)[-1],
            at=user_frame(o.error),
            traceback=_traceback(o.error),
        )
    return out


def outcome_dict(o: Outcome) -> dict[str, Any]:
    row: dict[str, Any] = {"name": o.name, "file": o.origin, "status": o.status}
    r = o.result
    if r is not None:
        row.update(r.as_dict())
        row["name"] = o.name
        m = r.minimal
        row["replay"] = None if m is None else shlex.join(["pmemsim", "replay", m.token])
        # The minimal crash of each distinct bug, in full; then every inconsistent crash.
        row["failures"] = [_failure(f) for f in r.failures]
        row["failing"] = [_failed(c) for c in r.failing]
        row["lint"] = [str(f) for f in r.findings]
    row["error"] = _error(o)
    return row


def write_json(path: Path, outcomes: list[Outcome], header: dict[str, Any]) -> None:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("passed", "failed", "error")}
    results = [o.result for o in outcomes if o.result is not None]
    doc = {
        **header,
        "summary": {
            "checks": len(outcomes),
            **counts,
            "images_possible": sum(r.images_possible for r in results),
            "images_covered": sum(r.images_covered for r in results),
            "images_checked": sum(r.images_checked for r in results),
            "seconds": round(sum(r.seconds for r in results), 4),
            "exact": all(r.exact for r in results),
        },
        "checks": [outcome_dict(o) for o in outcomes],
    }
    write_output(path, json.dumps(doc, indent=2) + "\n", "--json")


# -- JUnit XML -----------------------------------------------------------------------------

# XML 1.0 forbids most control characters, even escaped.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(s: str) -> str:
    return _ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def write_junit(
    path: Path, outcomes: list[Outcome], suite: str, properties: dict[str, str], report: Any
) -> None:
    """One ``testcase`` per check: a verdict that differs is a ``failure`` whose body is the
    report, a check that could not run an ``error``; ``report(result)`` words the report."""
    import platform
    import xml.etree.ElementTree as ET
    from datetime import UTC, datetime

    counts = {s: sum(o.status == s for o in outcomes) for s in ("failed", "error")}
    seconds = sum(o.result.seconds for o in outcomes if o.result is not None)
    root = ET.Element("testsuites", name="pmemsim", tests=str(len(outcomes)))
    root.set("failures", str(counts["failed"]))
    root.set("errors", str(counts["error"]))
    root.set("time", f"{seconds:.3f}")
    ts = ET.SubElement(root, "testsuite", name=_text(suite), tests=str(len(outcomes)))
    ts.set("failures", str(counts["failed"]))
    ts.set("errors", str(counts["error"]))
    ts.set("skipped", "0")
    ts.set("time", f"{seconds:.3f}")
    ts.set("timestamp", datetime.now(UTC).isoformat(timespec="seconds"))
    ts.set("hostname", platform.node())
    props = ET.SubElement(ts, "properties")
    for k, v in properties.items():
        ET.SubElement(props, "property", name=k, value=_text(v))
    for o in outcomes:
        classname = re.sub(r"\.py$", "", o.origin).replace("/", ".").strip(".")
        case = ET.SubElement(ts, "testcase", classname=_text(classname), name=_text(o.name))
        case.set("file", _text(o.origin))
        r = o.result
        case.set("time", f"{r.seconds:.3f}" if r is not None else "0")
        if o.status == "failed" and r is not None:
            el = ET.SubElement(case, "failure", type="UnexpectedVerdict")
            el.set("message", _text(f"expected {r.expect}, found {r.verdict}: {r.summary()}"))
            el.text = _text(report(r))
        elif o.status == "error":
            el = ET.SubElement(case, "error", type=type(o.error).__name__ if o.error else "Error")
            el.set("message", _text(o.problem().splitlines()[0]))
            el.text = _text(o.problem() + ("\n\n" + _traceback(o.error) if o.error else ""))
        elif r is not None and r.failures:
            # A known bug found as expected: its report is worth keeping next to the case.
            ET.SubElement(case, "system-out").text = _text(report(r))
    ET.indent(root)
    data = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    write_output(path, data, "--junit-xml")
