"""The one exception class for problems a user can fix (bad input, bad config, missing files).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input, config or environment, described in one line."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean ...?)' hint for `name` among `candidates`, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
