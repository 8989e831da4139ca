"""One check, on the two platforms persistent memory comes in."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, TypeVar

from ..enums import Granularity

__all__ = ["per_granularity"]

Verdict = Literal["consistent", "inconsistent"]
C = TypeVar("C", bound=Any)


def per_granularity(check: C, *, cache_line: Verdict, byte: Verdict) -> tuple[C, C]:
    """``check`` on an ADR platform (CACHE_LINE: caches must be flushed) and on an eADR one
    (BYTE: caches are in the power-fail domain), named ``NAME[cache_line]`` and
    ``NAME[byte]``, each expecting its own verdict: most ordering bugs vanish under eADR,
    bugs of program order do not."""

    def on(granularity: Granularity, expect: Verdict) -> C:
        name = f"{check.name}[{granularity.name.lower()}]"
        return dataclasses.replace(check, name=name, granularity=granularity, expect=expect)

    return on(Granularity.CACHE_LINE, cache_line), on(Granularity.BYTE, byte)
