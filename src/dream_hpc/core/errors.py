"""Errors a user can fix: the command line prints them as one line, never a traceback."""

from __future__ import annotations


class UserError(RuntimeError):
    """An error the user can fix; printed as one line, no traceback."""
