"""The errors LiveRec raises for people to read, in one place at the bottom of the import layers.

Every command and route turns these into one readable line: the command line exits with code 2, the
HTTP layer answers 4xx. Anything else escaping is a bug and is reported as one.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "DataFormatError", "LiveRecError", "UsageError"]


class LiveRecError(Exception):
    """Base of the errors whose message is meant for the person who ran LiveRec (one line)."""


class UsageError(LiveRecError, ValueError):
    """A problem with what was asked for (a flag, a setting, a parameter): the message says what was expected."""


class DataFormatError(UsageError):
    """A data file does not have the layout or the values a loader expects.

    The message is one line naming the file, where in it (``line N`` as an editor counts, header
    included; ``row index N`` for Parquet), the column, the value found and what was expected.
    """


class BackendUnavailable(LiveRecError, RuntimeError):
    """The configured backend cannot be reached (Redis down, or the redis extra missing): a setup problem."""
