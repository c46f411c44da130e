"""The HTTP API's routes, one router per resource (``serving.app`` mounts them in this order)."""

from liverec.serving.routes import events, items, models, operations, recommendations, users

__all__ = ["events", "items", "models", "operations", "recommendations", "users"]
