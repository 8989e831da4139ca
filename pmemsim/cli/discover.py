"""Finding the checks of a file or folder, as pytest finds tests.

* A folder is scanned recursively for ``*.py`` files, in sorted path order; names starting
  with ``_`` or ``.``, virtual environments and ``build``, ``dist``, ``node_modules`` folders
  are skipped.
* Each file is imported with its folder on ``sys.path`` (for a file inside a package, the
  first folder above the package, and the file is imported under its dotted name so that
  relative imports work), then the rootdir (the nearest folder above holding
  ``pyproject.toml``, ``setup.cfg``, ``setup.py``, ``pytest.ini`` or ``tox.ini``) and the
  current folder: a check file can import the user's own modules.
* A check is a CrashCheck or FileCrashCheck bound to a module-level name. Two different
  checks with one name in one file are refused (replay tokens name checks by file and name).
* ``-k`` selects checks as pytest does: an exact check name, or an expression of
  case-insensitive substrings of the check's name or file, with ``and``, ``or``, ``not``
  and parentheses.

A file that fails to import, and a pair of checks sharing a name, come back as
:class:`Broken` entries in file order: the command shows each as an ERROR row and runs the
rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..digest import blake2b
from .common import _PRIVATE, UsageProblem, restored_imports

__all__ = ["Broken", "Found", "Selector", "discover", "restored_imports"]

_SKIP_DIRS = {"build", "dist", "node_modules", "venv", "site-packages"}
_ROOT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", "pytest.ini", "tox.ini")


@dataclass(frozen=True)
class Found:
    """One check, where it is defined and under which module-level name."""

    check: Any
    origin: str
    variable: str

    @property
    def name(self) -> str:
        return str(self.check.name)

    @property
    def ref(self) -> str:
        """``FILE::NAME``, the check's name in replay tokens."""
        return f"{self.origin}::{self.name}"


@dataclass(frozen=True)
class Broken:
    """A file, or a check of it, that cannot run: shown as an ERROR row."""

    #: The check's name, or the file's when the file itself failed.
    name: str
    origin: str
    #: What went wrong, for the row's report ("importing it raised", ...).
    what: str
    error: BaseException | None = None


Entry = Found | Broken


# -- -k ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class Selector:
    """``-k`` expressions (several: any of them). Each is an exact check name, or words
    joined by ``and``, ``or``, ``not`` and parentheses, each word a case-insensitive
    substring of the check's name or of its file's path."""

    def __init__(self, expressions: Sequence[str] | None) -> None:
        self.expressions = list(expressions or ())
        self._compiled: list[Any] = []
        self._problems: list[str] = []
        #: Expressions that do not parse, with why: each may still be an exact check name.
        self._malformed: dict[str, str] = {}
        for e in self.expressions:
            try:
                self._compiled.append(_Parser(e).parse())
            except ValueError as exc:
                self._compiled.append(None)
                self._problems.append(f"-k {e!r}: {exc}")
                self._malformed[e] = str(exc)

    def __bool__(self) -> bool:
        return bool(self.expressions)

    def matches(self, name: str, origin: str) -> bool:
        """Whether the check ``name`` of the file ``origin`` is selected (words match the
        name or the file's name, not the folders above it)."""
        if not self.expressions:
            return True
        haystack = (name.lower(), os.path.basename(origin).lower())
        return any(
            e == name or (tree is not None and _evaluate(tree, haystack))
            for e, tree in zip(self.expressions, self._compiled, strict=True)
        )

    def check_malformed(self, names: set[str]) -> None:
        """UsageProblem for an expression that does not parse and is no check's exact name
        either: it selects nothing, whatever else was selected (or failed to import)."""
        for e, why in self._malformed.items():
            if e not in names:
                raise UsageProblem(f"-k {e!r}: {why}, and no check has that exact name")

    def nothing_matched(self, path: str) -> UsageProblem:
        """The error for a selection that found no check (with why, for a bad expression)."""
        why = f" ({'; '.join(self._problems)})" if self._problems else ""
        what = " or ".join(repr(e) for e in self.expressions)
        return UsageProblem(f"{path}: no check matches -k {what}{why}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN.findall(text)
        self.i = 0
        if not self.tokens:
            raise ValueError("an empty expression")

    def parse(self) -> Any:
        tree = self._or()
        if self.i != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.i]!r}")
        return tree

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _or(self) -> Any:
        tree = self._and()
        while self._peek() == "or":
            self.i += 1
            tree = ("or", tree, self._and())
        return tree

    def _and(self) -> Any:
        tree = self._not()
        while self._peek() == "and":
            self.i += 1
            tree = ("and", tree, self._not())
        return tree

    def _not(self) -> Any:
        tok = self._peek()
        if tok is None:
            raise ValueError("the expression ends too early")
        self.i += 1
        if tok == "not":
            return ("not", self._not())
        if tok == "(":
            tree = self._or()
            if self._peek() != ")":
                raise ValueError("a '(' is not closed")
            self.i += 1
            return tree
        if tok in ("and", "or", ")"):
            raise ValueError(f"unexpected {tok!r}")
        return ("word", tok.lower())


def _evaluate(tree: Any, haystack: tuple[str, str]) -> bool:
    op = tree[0]
    if op == "word":
        return any(tree[1] in h for h in haystack)
    if op == "not":
        return not _evaluate(tree[1], haystack)
    left = _evaluate(tree[1], haystack)
    return (
        (left or _evaluate(tree[2], haystack))
        if op == "or"
        else (left and _evaluate(tree[2], haystack))
    )


# -- files and imports ---------------------------------------------------------------------


def _skipped(name: str) -> bool:
    return name.startswith(("_", ".")) or name in _SKIP_DIRS or name.endswith(".egg-info")


def check_files(path: str | os.PathLike[str]) -> list[Path]:
    """The Python files a path names: itself, or every one under a folder (recursively)."""
    if not str(path).strip():
        raise UsageProblem("an empty path: name a file or folder ('.' for this one)")
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise UsageProblem(f"{path}: no such file or folder")
    out = []
    for dirpath, dirnames, filenames in os.walk(p):
        # A virtual environment is recognised by its marker file, whatever its name.
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not _skipped(d) and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        out += [
            Path(dirpath, f) for f in sorted(filenames) if f.endswith(".py") and not _skipped(f)
        ]
    return sorted(out)


def _package_base(f: Path) -> tuple[Path, str | None]:
    """The folder to put on sys.path for ``f`` and, inside a package, its dotted name."""
    folder = f.resolve().parent
    parts = [f.stem]
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, (".".join(parts) if len(parts) > 1 else None)


def _rootdir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if any((folder / m).is_file() for m in _ROOT_MARKERS):
            return folder
    return None


def _put_on_path(folders: Sequence[Path]) -> None:
    for folder in reversed(folders):
        text = str(folder)
        if text not in sys.path:
            sys.path.insert(0, text)


def _import(f: Path) -> Any:
    """Import one check file (its folders already on sys.path)."""
    _, dotted = _package_base(f)
    if dotted is not None:
        return importlib.import_module(dotted)
    digest = blake2b(str(f.resolve()).encode(), digest_size=4).hexdigest()
    stem = re.sub(r"\W", "_", f.stem)
    name = f"{_PRIVATE}{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, f)
    if spec is None or spec.loader is None:
        raise UsageProblem(f"{f}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    # Dataclasses defined in the file look their module up while being built.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def discover(
    path: str | os.PathLike[str],
    select: Sequence[str] | Selector | None = None,
    *,
    files: bool = True,
) -> list[Entry]:
    """Every check of ``path`` (a file or folder) that ``select`` matches, and every file or
    check that cannot run, in file order. Leaves the files' folders on ``sys.path`` (run it
    inside :func:`restored_imports` to undo that). ``files``: FileCrashChecks too.

    Raises UsageProblem when ``path`` does not exist or nothing at all is defined there.
    """
    from ..explore import CrashCheck, FileCrashCheck

    kinds: tuple[type, ...] = (CrashCheck, FileCrashCheck) if files else (CrashCheck,)
    selector = select if isinstance(select, Selector) else Selector(select)
    sources = check_files(path)
    start = Path(path).resolve()
    roots = [_package_base(f)[0] for f in sources]
    root = _rootdir(start if start.is_dir() else start.parent)
    _put_on_path([*dict.fromkeys(roots), *([root] if root else []), Path.cwd()])
    entries: list[Entry] = []
    defined = 0
    names: set[str] = set()
    for f in sources:
        origin = str(f)
        try:
            module = _import(f)
        except (Exception, SystemExit) as exc:
            # Reported whatever -k says (as pytest reports collection errors): the file
            # may well define the checks asked for.
            entries.append(Broken(origin, origin, "importing it raised", exc))
            continue
        by_name: dict[str, list[Found]] = {}
        seen: set[int] = set()
        for variable, value in vars(module).items():
            if isinstance(value, kinds) and id(value) not in seen:
                seen.add(id(value))
                name = cast(Any, value).name
                by_name.setdefault(name, []).append(Found(value, origin, variable))
        defined += len(by_name)
        names.update(by_name)
        for name, found in by_name.items():
            if not selector.matches(name, origin):
                continue
            if len(found) > 1:
                places = " and ".join(f"`{x.variable}`" for x in found)
                entries.append(
                    Broken(
                        name,
                        origin,
                        f"{len(found)} different checks have this name ({places}); "
                        "names must be unique in a file, replay tokens use them",
                    )
                )
            else:
                entries.append(found[0])
    selector.check_malformed(names)
    if not entries:
        if selector and defined:
            raise selector.nothing_matched(str(path))
        kinds_text = "CrashCheck or FileCrashCheck" if files else "CrashCheck"
        raise UsageProblem(f"{path}: defines no {kinds_text}")
    return entries
