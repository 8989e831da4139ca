"""Structures built like published persistent-memory bugs, big enough that exhaustive
exploration is out of reach (millions to 10^16 images at one crash point) and recovery reads
a few of the lines in flight: lazy exploration must get every verdict right, exactly, in
seconds. ``pmemsim check tests/structures/`` runs them; tests/test_structures.py pins them.
"""
