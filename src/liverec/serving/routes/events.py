"""``POST /v1/events``: ingest one event, a JSON array or NDJSON (all-or-nothing per batch)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from liverec.events.schema import BatchTooLargeError, EventValidationError, parse_events
from liverec.serving.auth import AUTH_RESPONSES, INGEST
from liverec.serving.deps import EngineDep, MetricsDep

router = APIRouter()


@router.post(
    "/v1/events",
    tags=["events"],
    summary="Ingest one event, a JSON array or NDJSON",
    dependencies=[INGEST],
    responses=AUTH_RESPONSES,
)
async def post_events(request: Request, engine: EngineDep, metrics: MetricsDep) -> JSONResponse:
    limit = engine.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return JSONResponse({"detail": f"body of {declared} bytes exceeds {limit}"}, 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return JSONResponse({"detail": f"body exceeds {limit} bytes"}, 413)
    try:
        events = await run_in_threadpool(
            parse_events, bytes(body), request.headers.get("content-type"), engine.event_config
        )
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
    return JSONResponse(
        {
            "received": len(events),
            "stored": result.stored,
            "duplicates": result.duplicates,
            "last_offset": result.last_offset,
        }
    )
