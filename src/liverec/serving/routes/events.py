"""``POST /v1/events``: ingest one event, a JSON array or NDJSON (all-or-nothing per batch).

The body is parsed by :func:`liverec.events.schema.parse_events` (NDJSON reports each line's errors), not
by FastAPI; :func:`build_router` writes what it accepts into the OpenAPI document from the same ``EventIn``
model, with the configured event types and limits.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from liverec.events.schema import BatchTooLargeError, EventConfig, EventValidationError, event_model, parse_events
from liverec.serving.auth import AUTH_RESPONSES, INGEST
from liverec.serving.deps import EngineDep, MetricsDep
from liverec.serving.schemas import ErrorOut, EventErrorsOut, EventsAck

__all__ = ["build_router", "post_events"]


def request_body(config: EventConfig) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``POST /v1/events``: one event, an array, or NDJSON lines."""
    event = event_model(config).model_json_schema()
    for option in event["properties"]["timestamp"]["anyOf"]:
        if option.get("type") == "string":
            option["format"] = "date-time"  # ISO 8601; a zone-less time is UTC
    skew = config.max_future_skew_s
    ahead = "any time" if skew is None else f"at most {skew:g} s ahead of the server's clock"
    event["properties"]["timestamp"]["description"] = (
        f"Unix seconds or an ISO 8601 time after 1970 (a time without a zone is UTC; default: when received); {ahead}"
    )
    batch = {"type": "array", "items": event, "minItems": 1, "maxItems": config.max_batch}
    return {
        "required": True,
        "description": f"at most {config.max_body_bytes} bytes and {config.max_batch} events; a batch is stored "
        "whole or not at all",
        "content": {
            "application/json": {"schema": {"oneOf": [event, batch]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one EventIn object per line"}},
        },
    }


def build_router(config: EventConfig) -> APIRouter:
    """The events route, documented with the event types and limits of ``config``."""
    router = APIRouter()
    router.add_api_route(
        "/v1/events",
        post_events,
        methods=["POST"],
        tags=["events"],
        summary="Ingest one event, a JSON array or NDJSON",
        dependencies=[INGEST],
        response_model=EventsAck,
        responses={
            **AUTH_RESPONSES,
            413: {"model": ErrorOut, "description": f"more than {config.max_batch} events in one batch"},
            422: {"model": EventErrorsOut, "description": "every invalid field of every event; nothing was stored"},
        },
        openapi_extra={"requestBody": request_body(config)},
    )
    return router


async def post_events(request: Request, engine: EngineDep, metrics: MetricsDep) -> JSONResponse:
    body = await request.body()  # the body limit (serving.limits) has bounded it already
    try:
        events = await run_in_threadpool(parse_events, body, request.headers.get("content-type"), engine.event_config)
    except BatchTooLargeError as error:
        return JSONResponse({"detail": str(error)}, 413)
    except EventValidationError as error:
        metrics.rejected.inc(max(1, len({e["index"] for e in error.errors})))
        return JSONResponse(
            {"detail": error.errors, "message": f"{len(error.errors)} error(s); no event of this batch was stored"},
            422,
        )
    result = await asyncio.wrap_future(engine.ingest_async(events))
    metrics.events.inc(result.stored)
    metrics.duplicates.inc(result.duplicates)
    if any(event.recommendation_id is not None for event in result.events):
        joined = await run_in_threadpool(engine.join_rewards, result.events)
        metrics.rewards_joined.inc(len(joined.rewards))
        metrics.rewards_late.inc(joined.late)
        for reason, count in joined.unjoined.items():
            metrics.rewards_unjoined.labels(reason).inc(count)
    return JSONResponse(
        {
            "received": len(events),
            "stored": result.stored,
            "duplicates": result.duplicates,
            "last_offset": result.last_offset,
        }
    )
