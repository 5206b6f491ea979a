"""The error every user-facing failure derives from, and the CLI's exit codes.

``RacError`` marks a problem with the user's input or environment (a bad recipe, a missing
dataset, an unsupported option): the CLI prints it as one ``error:`` line and exits 2. Any other
exception is a bug in rac and keeps its traceback. Torch-free, imports nothing from rac.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_BUG = 70  # an unexpected exception: a bug in rac (sysexits' EX_SOFTWARE)


class RacError(Exception):
    """Base of every error the user can fix (bad input, missing file or extra, wrong option)."""


class UsageError(RacError, ValueError):
    """A command-line option or argument is invalid (e.g. ``--cell`` on a plain recipe)."""
