"""A process's own peak resident set size, for the benchmarks' memory numbers."""

from __future__ import annotations


def peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM belongs to the process's own address space; ru_maxrss
    does not: Linux carries it over from the parent that forked (or vforked) the process
    before exec, so a child of a big process reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
