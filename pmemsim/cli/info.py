"""``pmemsim info``: the installed libpmem2, what it offers, and what a directory gets."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

from ..enums import Granularity
from ..errors import BackendUnavailableError, Pmem2Code, PmemError
from .common import EXIT_OK, EXIT_USAGE, UsageProblem

__all__ = ["gather", "register"]

_MEANING = {
    Granularity.BYTE: "eADR or DAX with flushing caches: a store is durable once visible",
    Granularity.CACHE_LINE: "DAX (ADR): flush the cache lines and fence",
    Granularity.PAGE: "no DAX: persist is msync of whole pages",
}


def _code_name(code: int | None) -> str:
    if code is None:
        return ""
    try:
        return f"PMEM2_E_{Pmem2Code(code).name}"
    except ValueError:
        return str(code)


def gather(directory: str) -> dict[str, Any]:
    """Everything ``pmemsim info`` reports, as plain data (the ``--json`` output).

    Raises BackendUnavailableError when libpmem2 cannot be used.
    """
    from ..backend import load_backend

    cls = load_backend("real")
    backend: Any = cls()
    info = backend.library
    binding = backend.binding
    probes = backend.probe(directory)
    ok = [p for p in probes if p.effective is not None]
    finest = min((p.effective for p in ok), default=None)
    return {
        "library": {
            "path": info.path,
            "real_path": info.real_path,
            "soname": info.soname,
            "version_nodes": list(info.version_nodes),
            "exported_functions": len(info.functions),
            "bound_functions": len(binding.bound),
        },
        "capabilities": backend.capabilities.as_dict(),
        "forced_granularity": backend.forced_granularity(),
        "directory": {
            "path": directory,
            "granularity": finest.name if finest is not None else None,
            "probes": [
                {
                    "required": p.required.name,
                    "effective": p.effective.name if p.effective is not None else None,
                    "pmem2_code": p.pmem2_code,
                    "error": _code_name(p.pmem2_code),
                    "message": p.message,
                }
                for p in probes
            ],
        },
    }


def _print(report: dict[str, Any]) -> None:
    lib = report["library"]
    print(f"libpmem2:      {lib['path']}")
    if lib["real_path"] != lib["path"]:
        print(f"  file:        {lib['real_path']}")
    print(f"  soname:      {lib['soname']}")
    print(f"  versions:    {', '.join(lib['version_nodes']) or '(unversioned)'}")
    print(f"  functions:   {lib['exported_functions']} exported, {lib['bound_functions']} bound")
    print("capabilities:")
    for name, have in report["capabilities"].items():
        print(f"  {name:22s} {'yes' if have else 'NO (the library does not export it)'}")
    forced = report["forced_granularity"]
    if forced:
        print(
            f"PMEM2_FORCE_GRANULARITY={forced}: libpmem2 is PRETENDING; data is not made "
            "durable the way the reported granularity promises"
        )
    d = report["directory"]
    print(f"directory {d['path']}:")
    for p in d["probes"]:
        got = p["effective"] or f"fails: {p['error']} ({p['pmem2_code']})"
        print(f"  required {p['required']:10s} -> {got}")
    if d["granularity"] is None:
        print("  nothing maps here")
    else:
        g = Granularity[d["granularity"]]
        print(f"  a set here gets {g.name} granularity ({_MEANING[g]})")


def _cmd_info(args: argparse.Namespace) -> int:
    directory = args.dir if args.dir is not None else tempfile.gettempdir()
    if not directory.strip():
        raise UsageProblem("--dir: an empty path ('.' for this folder)")
    if not os.path.isdir(directory):
        raise UsageProblem(f"{directory}: not a directory")
    try:
        report = gather(directory)
    except BackendUnavailableError as exc:
        print(f"pmemsim: the libpmem2 backend is unavailable: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except PmemError as exc:
        raise UsageProblem(f"cannot probe {directory}: {exc}") from exc
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="show the installed libpmem2, its capabilities and the granularity a directory gets",
        description=(
            "Report the libpmem2 the real backend would use (path, version nodes, exported "
            "features) and the store granularity a set gets for files in DIR, found by "
            "mapping a temporary file there at each required granularity."
        ),
    )
    p.add_argument("--dir", metavar="DIR", help="directory to probe (default: the temp dir)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)
