"""The tagging job's one error type: a user-facing problem (bad model dir, no users, unknown task ...).

Its messages name the argument (``--model``, ``--users`` ...) and the fix; the command line prints them as
one line.
"""

from __future__ import annotations


class TaggingError(ValueError):
    """A user-facing error of the tagging job (bad model dir, no users, unknown task ...)."""
