"""LiveRec: a real-time personalised recommendation engine."""

__version__ = "0.1.0"
