"""Serving: the engine (no HTTP) and the FastAPI app over it."""
