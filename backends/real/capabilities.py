"""What the installed libpmem2 offers, read from its ELF file before anything is bound.

Binding a function the library does not export would fail at call time (ABI mode) or at
import (API mode), so the dynamic symbol table and its version nodes are read first with
pyelftools, and the binding declares only what is there. Each feature the backend uses
beyond plain mapping is a capability flag: a missing symbol turns its feature off with a
clear NotSupportedError instead of an AttributeError deep in a call.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

__all__ = [
    "ENV_LIBRARY",
    "FEATURE_SYMBOLS",
    "SONAME",
    "Capabilities",
    "LibraryInfo",
    "find_library",
    "read_library",
]

SONAME = "libpmem2.so.1"
#: Environment variable naming the libpmem2 file to use instead of the one ldconfig knows
#: (for example a PMDK built from source under /usr/local/lib).
ENV_LIBRARY = "PMEMSIM_LIBPMEM2"

_LIB_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/local/lib",
    "/usr/local/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
    "/lib",
)


class LibraryNotFound(Exception):
    """No usable libpmem2 file; the message says what was tried and what to install."""


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    """The facts read from the library file."""

    #: The path the library was found under (what dlopen is given).
    path: str
    #: The file behind any symlinks.
    real_path: str
    soname: str | None
    #: Version nodes the library defines (``LIBPMEM2_1.0`` for PMDK 1.12.1).
    version_nodes: tuple[str, ...]
    #: Every exported function and the version node it belongs to ("" when unversioned).
    functions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Which optional libpmem2 features the installed library exports.

    A flag says the *library* has the feature. Whether a given source supports it is
    answered at run time: on a regular file without DAX, device id and USC report "not
    supported" even where the library exports them.
    """

    #: Maps placed in vm reservations (pmem2_vm_reservation_*): every part map needs them.
    vm_reservations: bool
    #: pmem2_deep_flush: flushing through the memory controller's write queues.
    deep_flush: bool
    #: Listing and clearing bad blocks (pmem2_badblock_*).
    badblocks: bool
    #: The device's unsafe-shutdown count (pmem2_source_device_usc), for shutdown data state.
    unsafe_shutdown_count: bool
    #: The device id (pmem2_source_device_id), for shutdown data state.
    device_id: bool
    #: Machine-check-safe reads from a source (pmem2_source_pread_mcsafe).
    mcsafe_read: bool
    #: Machine-check-safe writes to a source (pmem2_source_pwrite_mcsafe).
    mcsafe_write: bool

    @classmethod
    def from_functions(cls, names: Iterable[str]) -> Capabilities:
        have = set(names)
        return cls(**{f: FEATURE_SYMBOLS[f] <= have for f in FEATURE_SYMBOLS})

    def as_dict(self) -> dict[str, bool]:
        return {f.name: bool(getattr(self, f.name)) for f in fields(self)}


#: The symbols each capability needs, all of them.
FEATURE_SYMBOLS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "vm_reservations": frozenset(
            {
                "pmem2_vm_reservation_new",
                "pmem2_vm_reservation_delete",
                "pmem2_vm_reservation_extend",
                "pmem2_vm_reservation_shrink",
                "pmem2_vm_reservation_get_address",
                "pmem2_vm_reservation_get_size",
                "pmem2_config_set_vm_reservation",
            }
        ),
        "deep_flush": frozenset({"pmem2_deep_flush"}),
        "badblocks": frozenset(
            {
                "pmem2_badblock_context_new",
                "pmem2_badblock_context_delete",
                "pmem2_badblock_next",
                "pmem2_badblock_clear",
            }
        ),
        "unsafe_shutdown_count": frozenset({"pmem2_source_device_usc"}),
        "device_id": frozenset({"pmem2_source_device_id"}),
        "mcsafe_read": frozenset({"pmem2_source_pread_mcsafe"}),
        "mcsafe_write": frozenset({"pmem2_source_pwrite_mcsafe"}),
    }
)


def _ldconfig_paths() -> list[str]:
    """Paths ``ldconfig -p`` lists for the soname, the ones for this machine's ABI first."""
    exe = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-p"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    arch = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")
    mine: list[str] = []
    other: list[str] = []
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name != SONAME or "=>" not in rest:
            continue
        path = rest.rpartition("=>")[2].strip()
        (mine if arch and arch in rest else other).append(path)
    return mine + other


def find_library() -> str:
    """The path of the libpmem2 to use: $PMEMSIM_LIBPMEM2, else what ldconfig or the usual
    library folders hold. Raises LibraryNotFound with the remedy."""
    forced = os.environ.get(ENV_LIBRARY)
    if forced:
        if not os.path.isfile(forced):
            raise LibraryNotFound(
                f"{ENV_LIBRARY}={forced} is not a file (unset it to use the system's "
                "libpmem2, installed with `apt-get install libpmem2` on Debian/Ubuntu)"
            )
        return forced
    candidates = _ldconfig_paths()
    extra = os.environ.get("LD_LIBRARY_PATH", "")
    for d in [*filter(None, extra.split(":")), *_LIB_DIRS]:
        candidates.append(os.path.join(d, SONAME))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise LibraryNotFound(
        f"{SONAME} is not installed (install it with `apt-get install libpmem2` on "
        f"Debian/Ubuntu, or point {ENV_LIBRARY} at a libpmem2 built from PMDK)"
    )


def read_library(path: str) -> LibraryInfo:
    """The soname, version nodes and exported functions of the ELF file at ``path``."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection
    from elftools.elf.sections import SymbolTableSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            soname = None
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_SONAME":
                            soname = str(getattr(tag, "soname", "")) or None
            nodes: dict[int, str] = {}
            verdef = elf.get_section_by_name(".gnu.version_d")
            if isinstance(verdef, GNUVerDefSection):
                for v, aux in verdef.iter_versions():
                    # The base definition (flag VER_FLG_BASE) names the file, not a node.
                    names = [a.name for a in aux]
                    if names and not v["vd_flags"] & 1:
                        nodes[int(v["vd_ndx"])] = str(names[0])
            versym = elf.get_section_by_name(".gnu.version")
            dynsym = elf.get_section_by_name(".dynsym")
            functions: dict[str, str] = {}
            if isinstance(dynsym, SymbolTableSection):
                for i, sym in enumerate(dynsym.iter_symbols()):
                    info = sym["st_info"]
                    if (
                        sym["st_shndx"] == "SHN_UNDEF"
                        or info["type"] not in ("STT_FUNC", "STT_GNU_IFUNC")
                        or info["bind"] not in ("STB_GLOBAL", "STB_WEAK")
                    ):
                        continue
                    version = ""
                    if isinstance(versym, GNUVerSymSection):
                        ndx = versym.get_symbol(i)["ndx"]
                        if isinstance(ndx, int):
                            if ndx & 0x8000:
                                continue  # a hidden (non-default) version: not linkable
                            version = nodes.get(ndx, "")
                    functions[str(sym.name)] = version
    except (OSError, ELFError) as exc:
        raise LibraryNotFound(f"{path} cannot be read as a shared library: {exc}") from exc
    return LibraryInfo(
        path,
        os.path.realpath(path),
        soname,
        tuple(nodes[k] for k in sorted(nodes)),
        MappingProxyType(functions),
    )
