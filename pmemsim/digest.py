"""BLAKE2b, the digest of lines, pages and images.

hashlib's ``blake2b`` is CPython's own, never OpenSSL's; importing hashlib for it still loads
OpenSSL (2 ms at every start-up, 10 ms on a busy machine), so it is taken from where hashlib
takes it.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # an interpreter without CPython's private module
    from hashlib import blake2b

__all__ = ["blake2b"]
