"""Errors the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a wrong path, a wrong kind of checkpoint, a bad option.

    The message names the problem and, where there is one, the fix.
    """

    exit_code = 2
