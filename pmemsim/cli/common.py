"""What every ``pmemsim`` subcommand shares: exit statuses and the bad-input exception."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UsageProblem"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageProblem(Exception):
    """Bad input to the command line: reported with exit status 2."""
