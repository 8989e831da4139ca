"""Where pmemsim gets a seed when it is asked to choose one itself.

Exploration never draws from an unseeded generator: random strategies derive one generator
per crash point from ``(seed, point)`` (``PointContext.rng``), so the seed alone replays
them. The only unseeded choice left is the seed itself when a user asks for "a random
seed" (the pytest plugin's ``--pmemsim-seed=random``, :func:`fresh_seed`). That choice
comes from :data:`generator`, one module-level ``random.Random``, which is registered with
Hypothesis (:func:`register_with_hypothesis`; run through the ``hypothesis`` entry point when
Hypothesis is imported, and again by :mod:`pmemsim.hypothesis`): inside a ``@given`` test
Hypothesis seeds it for every example and restores it afterwards, so a seed chosen there is
replayed with the example. The chosen seed is always printed, so it can be replayed too.
"""

from __future__ import annotations

import random

from ..errors import ErrorCode, InvalidArgumentError

__all__ = ["SEED_LIMIT", "fresh_seed", "generator", "parse_seed", "register_with_hypothesis"]

#: Seeds are non-negative integers below this (they are printed and typed back in).
SEED_LIMIT = 2**32

#: The generator fresh seeds come from. Module-level so Hypothesis' weak reference to it
#: (``register_random``) stays alive for as long as the process.
generator = random.Random()


def fresh_seed() -> int:
    """A new seed from :data:`generator` (print it: it is what replays the run)."""
    return generator.randrange(SEED_LIMIT)


def parse_seed(text: str | int) -> int:
    """A seed from user input: a non-negative integer below :data:`SEED_LIMIT`."""
    if isinstance(text, bool):
        raise InvalidArgumentError(ErrorCode.EINVAL, f"a seed is an integer, not {text!r}")
    try:
        seed = int(text) if isinstance(text, int) else int(text.strip(), 10)
    except (ValueError, AttributeError):
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"a seed is an integer in [0, {SEED_LIMIT}), not {text!r}"
        ) from None
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidArgumentError(
            ErrorCode.EINVAL, f"a seed is an integer in [0, {SEED_LIMIT}), not {seed}"
        )
    return seed


def register_with_hypothesis() -> None:
    """Let Hypothesis seed and restore :data:`generator` around every example.

    Registered as the ``hypothesis`` entry point, so Hypothesis calls it when it is
    imported; pmemsim itself never imports Hypothesis for it.
    """
    from hypothesis import register_random

    register_random(generator)
