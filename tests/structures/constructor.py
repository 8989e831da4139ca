"""A tree constructor that initialises 24 nodes and publishes the tree in one epoch
(the shape of FAST_FAIR's and CCEH's constructors, whose fixed versions still dirty every
node before one fence).

Layout (4 KiB): the tree header at +0 (magic, root offset, height); NODES one-line nodes from
+0x100, each (node magic, level, next sibling offset, entry count). Recovery opens the tree
when the header carries the magic and walks the first WALK nodes of the sibling chain from
the root: each must be an initialised leaf linked to the next one.

* ``bug``: the nodes and the header are written, then everything is persisted with one
  fence: the header's line may reach the media before the nodes' lines (eviction, or the
  flushes' own order), so the tree is published over uninitialised nodes.
* ``fix``: the nodes are persisted first, then the header is written and persisted.

At the bug's fence every node line holds four stores and the header three: 5^24 * 4 images.
"""

from __future__ import annotations

from pmemsim import View
from pmemsim.explore import CrashCheck

MAGIC = 0x7EE0_0001
NODE = 0x90DE
NODES = 24
FIRST = 0x100
LINE = 64
WALK = 3


def _nodes(v: View) -> None:
    for i in range(NODES):
        at = (FIRST + i * LINE) // 8
        nxt = FIRST + (i + 1) * LINE if i + 1 < NODES else 0
        v.u64[at] = NODE
        v.u64[at + 1] = 0  # level: a leaf
        v.u64[at + 2] = nxt
        v.u64[at + 3] = 0  # no entries yet


def _header(v: View) -> None:
    v.u64[1] = FIRST
    v.u64[2] = 1
    v.u64[0] = MAGIC


def construct_in_one_epoch(v: View) -> None:
    _nodes(v)
    _header(v)
    v.persist(0, FIRST + NODES * LINE)


def construct_nodes_first(v: View) -> None:
    _nodes(v)
    v.persist(FIRST, NODES * LINE)
    _header(v)
    v.persist(0, 24)


class TornTree(Exception):
    pass


def recover(v: View) -> bool:
    if v.u64[0] != MAGIC:
        return True  # not published: nothing to open
    node = v.u64[1]
    for hop in range(WALK):
        at = node // 8
        if v.u64[at] != NODE or v.u64[at + 1] != 0:
            raise TornTree(f"node {hop} at +0x{node:x} is not an initialised leaf")
        nxt = v.u64[at + 2]
        if nxt != node + LINE:
            raise TornTree(f"node {hop} at +0x{node:x} links to +0x{nxt:x}")
        node = nxt
    return True


bug = CrashCheck("constructor.bug", construct_in_one_epoch, recover, expect="inconsistent")
fix = CrashCheck("constructor.fix", construct_nodes_first, recover)
