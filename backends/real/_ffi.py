"""The raw binding to libpmem2: every C declaration in one place, bound by cffi in ABI mode.

Hazardous: nothing outside this package uses it; the rest of the backend turns its return
codes into exceptions (errors.py) and its pointers into addresses.

ABI mode (``ffi.dlopen``) needs neither a compiler nor libpmem2's headers, so installing
pmemsim works anywhere and the backend can report itself unavailable instead of failing to
build (docs/real.md has the ABI-versus-API measurements behind this choice).

Only functions the library exports are declared: capabilities.py reads the ELF symbol table
first. ``pmem2_err_to_errno`` is in the header of PMDK 1.12.1 but not in the library, so a
declaration copied from the header would not be enough.

Pointers that Python only ever uses as numbers (map and reservation addresses, the
destination of a copy) are declared ``uintptr_t``; the copy functions' ``void *`` result,
which nobody reads, is declared ``void``. Both are the same registers in the x86-64 and
AArch64 C calling conventions, and they spare a cdata object (and its cast) per call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .capabilities import Capabilities, LibraryInfo, LibraryNotFound, find_library, read_library

__all__ = [
    "CORE",
    "FUNCTIONS",
    "NEVER_BOUND",
    "TYPES",
    "Binding",
    "LibraryUnavailable",
    "binding",
    "open_binding",
]

TYPES = """
struct pmem2_source;
struct pmem2_config;
struct pmem2_map;
struct pmem2_vm_reservation;
struct pmem2_badblock_context;
struct pmem2_badblock { size_t offset; size_t length; };

typedef void (*pmemsim_persist_fn)(uintptr_t ptr, size_t size);
typedef void (*pmemsim_flush_fn)(uintptr_t ptr, size_t size);
typedef void (*pmemsim_drain_fn)(void);
typedef void (*pmemsim_memmove_fn)(uintptr_t dest, const char *src, size_t len, unsigned flags);
typedef void (*pmemsim_memset_fn)(uintptr_t dest, int c, size_t len, unsigned flags);
"""

#: Every function the backend may bind, by name. Declared only if the library exports it.
FUNCTIONS: dict[str, str] = {
    # sources
    "pmem2_source_from_fd": "int pmem2_source_from_fd(struct pmem2_source **src, int fd);",
    "pmem2_source_from_anon": (
        "int pmem2_source_from_anon(struct pmem2_source **src, size_t size);"
    ),
    "pmem2_source_size": "int pmem2_source_size(const struct pmem2_source *src, size_t *size);",
    "pmem2_source_alignment": (
        "int pmem2_source_alignment(const struct pmem2_source *src, size_t *alignment);"
    ),
    "pmem2_source_delete": "int pmem2_source_delete(struct pmem2_source **src);",
    "pmem2_source_pread_mcsafe": (
        "int pmem2_source_pread_mcsafe(struct pmem2_source *src, void *buf, size_t size,"
        " size_t offset);"
    ),
    "pmem2_source_pwrite_mcsafe": (
        "int pmem2_source_pwrite_mcsafe(struct pmem2_source *src, void *buf, size_t size,"
        " size_t offset);"
    ),
    # vm reservations
    "pmem2_vm_reservation_new": (
        "int pmem2_vm_reservation_new(struct pmem2_vm_reservation **rsv, uintptr_t addr,"
        " size_t size);"
    ),
    "pmem2_vm_reservation_delete": (
        "int pmem2_vm_reservation_delete(struct pmem2_vm_reservation **rsv);"
    ),
    "pmem2_vm_reservation_extend": (
        "int pmem2_vm_reservation_extend(struct pmem2_vm_reservation *rsv, size_t size);"
    ),
    "pmem2_vm_reservation_shrink": (
        "int pmem2_vm_reservation_shrink(struct pmem2_vm_reservation *rsv, size_t offset,"
        " size_t size);"
    ),
    "pmem2_vm_reservation_get_address": (
        "uintptr_t pmem2_vm_reservation_get_address(struct pmem2_vm_reservation *rsv);"
    ),
    "pmem2_vm_reservation_get_size": (
        "size_t pmem2_vm_reservation_get_size(struct pmem2_vm_reservation *rsv);"
    ),
    # configs
    "pmem2_config_new": "int pmem2_config_new(struct pmem2_config **cfg);",
    "pmem2_config_delete": "int pmem2_config_delete(struct pmem2_config **cfg);",
    "pmem2_config_set_required_store_granularity": (
        "int pmem2_config_set_required_store_granularity(struct pmem2_config *cfg, int g);"
    ),
    "pmem2_config_set_offset": (
        "int pmem2_config_set_offset(struct pmem2_config *cfg, size_t offset);"
    ),
    "pmem2_config_set_length": (
        "int pmem2_config_set_length(struct pmem2_config *cfg, size_t length);"
    ),
    "pmem2_config_set_vm_reservation": (
        "int pmem2_config_set_vm_reservation(struct pmem2_config *cfg,"
        " struct pmem2_vm_reservation *rsv, size_t offset);"
    ),
    # maps
    "pmem2_map_new": (
        "int pmem2_map_new(struct pmem2_map **map, const struct pmem2_config *cfg,"
        " const struct pmem2_source *src);"
    ),
    "pmem2_map_delete": "int pmem2_map_delete(struct pmem2_map **map);",
    "pmem2_map_get_address": "uintptr_t pmem2_map_get_address(struct pmem2_map *map);",
    "pmem2_map_get_size": "size_t pmem2_map_get_size(struct pmem2_map *map);",
    "pmem2_map_get_store_granularity": (
        "int pmem2_map_get_store_granularity(struct pmem2_map *map);"
    ),
    # the functions libpmem2 picks for a map
    "pmem2_get_persist_fn": "pmemsim_persist_fn pmem2_get_persist_fn(struct pmem2_map *map);",
    "pmem2_get_flush_fn": "pmemsim_flush_fn pmem2_get_flush_fn(struct pmem2_map *map);",
    "pmem2_get_drain_fn": "pmemsim_drain_fn pmem2_get_drain_fn(struct pmem2_map *map);",
    "pmem2_get_memmove_fn": "pmemsim_memmove_fn pmem2_get_memmove_fn(struct pmem2_map *map);",
    "pmem2_get_memcpy_fn": "pmemsim_memmove_fn pmem2_get_memcpy_fn(struct pmem2_map *map);",
    "pmem2_get_memset_fn": "pmemsim_memset_fn pmem2_get_memset_fn(struct pmem2_map *map);",
    "pmem2_deep_flush": (
        "int pmem2_deep_flush(struct pmem2_map *map, uintptr_t ptr, size_t size);"
    ),
    # reliability
    "pmem2_source_device_id": (
        "int pmem2_source_device_id(const struct pmem2_source *src, char *id, size_t *len);"
    ),
    "pmem2_source_device_usc": (
        "int pmem2_source_device_usc(const struct pmem2_source *src, uint64_t *usc);"
    ),
    "pmem2_badblock_context_new": (
        "int pmem2_badblock_context_new(struct pmem2_badblock_context **bbctx,"
        " const struct pmem2_source *src);"
    ),
    "pmem2_badblock_next": (
        "int pmem2_badblock_next(struct pmem2_badblock_context *bbctx, struct pmem2_badblock *bb);"
    ),
    "pmem2_badblock_context_delete": (
        "void pmem2_badblock_context_delete(struct pmem2_badblock_context **bbctx);"
    ),
    "pmem2_badblock_clear": (
        "int pmem2_badblock_clear(struct pmem2_badblock_context *bbctx,"
        " const struct pmem2_badblock *bb);"
    ),
    # errors
    "pmem2_errormsg": "const char *pmem2_errormsg(void);",
}

#: In libpmem2.h but deliberately never bound, and why.
NEVER_BOUND: dict[str, str] = {
    "pmem2_err_to_errno": "declared in the 1.12.1 header but not exported by the library",
    "pmem2_map_from_existing": (
        "hangs for ever in msync(addr, 0) on the first persist of a PAGE map (1.12.1); "
        "the backend never wraps existing mappings"
    ),
    "pmem2_perror": "variadic, and prints to stderr: errors travel as exceptions instead",
}

#: Without these nothing can be mapped: the backend is unavailable.
CORE: frozenset[str] = frozenset(
    {
        "pmem2_source_from_fd",
        "pmem2_source_from_anon",
        "pmem2_source_delete",
        "pmem2_config_new",
        "pmem2_config_delete",
        "pmem2_config_set_required_store_granularity",
        "pmem2_config_set_offset",
        "pmem2_config_set_length",
        "pmem2_map_new",
        "pmem2_map_delete",
        "pmem2_map_get_address",
        "pmem2_map_get_size",
        "pmem2_map_get_store_granularity",
        "pmem2_get_persist_fn",
        "pmem2_get_flush_fn",
        "pmem2_get_drain_fn",
        "pmem2_get_memmove_fn",
        "pmem2_get_memset_fn",
        "pmem2_errormsg",
    }
)


class LibraryUnavailable(Exception):
    """libpmem2 (or cffi, or pyelftools) cannot be used; ``str()`` says why and the remedy."""


@dataclass(frozen=True, slots=True)
class Binding:
    """An opened libpmem2: the cffi objects, what the file offers, and what got bound."""

    ffi: Any
    lib: Any
    info: LibraryInfo
    capabilities: Capabilities
    #: The functions declared (exported, known here, and not hidden by the caller).
    bound: frozenset[str]

    def has(self, name: str) -> bool:
        return name in self.bound

    def errormsg(self) -> str:
        """libpmem2's message for the last failure in this thread (may be stale: see
        errors.py)."""
        raw = self.lib.pmem2_errormsg()
        if raw == self.ffi.NULL:
            return ""
        return str(self.ffi.string(raw).decode("utf-8", "replace"))


def open_binding(path: str | None = None, *, hide: Iterable[str] = ()) -> Binding:
    """Read the library at ``path`` (default: find_library()), then bind what it exports.

    ``hide`` leaves exported functions unbound, as if the library lacked them (how the tests
    check that a missing symbol disables its feature cleanly).
    """
    try:
        import cffi  # type: ignore[import-untyped]
    except ImportError:
        raise LibraryUnavailable("cffi is not installed (pip install 'pmemsim[real]')") from None
    try:
        import elftools  # noqa: F401
    except ImportError:
        raise LibraryUnavailable(
            "pyelftools is not installed (pip install 'pmemsim[real]')"
        ) from None
    try:
        lib_path = path if path is not None else find_library()
        info = read_library(lib_path)
    except LibraryNotFound as exc:
        raise LibraryUnavailable(str(exc)) from None
    hidden = set(hide)
    exported = {name for name in info.functions if name not in hidden}
    missing = sorted(CORE - exported)
    if missing:
        raise LibraryUnavailable(
            f"{lib_path} lacks {', '.join(missing)}: not a usable libpmem2 "
            "(PMDK 1.12 or later is needed; `apt-get install libpmem2`)"
        )
    bound = frozenset(name for name in FUNCTIONS if name in exported)
    ffi = cffi.FFI()
    ffi.cdef(TYPES + "\n".join(FUNCTIONS[name] for name in sorted(bound)))
    try:
        lib = ffi.dlopen(lib_path)
    except OSError as exc:
        raise LibraryUnavailable(f"{lib_path} cannot be loaded: {exc}") from None
    return Binding(ffi, lib, info, Capabilities.from_functions(bound), bound)


_lock = threading.Lock()
_cached: Binding | LibraryUnavailable | None = None


def binding() -> Binding:
    """The process-wide binding, opened on first use; LibraryUnavailable if it cannot be."""
    global _cached
    with _lock:
        if _cached is None:
            try:
                _cached = open_binding()
            except LibraryUnavailable as exc:
                _cached = exc
        if isinstance(_cached, LibraryUnavailable):
            raise LibraryUnavailable(str(_cached))
        return _cached
