"""The one exception type for users' mistakes, raised by library code; only command-line entry points exit."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake the user can fix (a missing file, a flag value out of range, data that does not fit): the message
    names the problem and what to do. ``toolkit.cli.entry_point`` turns it into one line and exit code 2."""
