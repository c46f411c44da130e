"""Events in: the schema that validates them and the durable log that stores them (below the HTTP layer)."""

from liverec.events.log import AppendResult, ConsumerGroupLog, EventLog, ImportResult, SQLiteEventLog, StoredEvent
from liverec.events.schema import (
    BatchTooLargeError,
    Event,
    EventConfig,
    EventIn,
    EventValidationError,
    event_model,
    parse_events,
)

__all__ = [
    "AppendResult",
    "BatchTooLargeError",
    "ConsumerGroupLog",
    "Event",
    "EventConfig",
    "EventIn",
    "EventLog",
    "EventValidationError",
    "ImportResult",
    "SQLiteEventLog",
    "StoredEvent",
    "event_model",
    "parse_events",
]
