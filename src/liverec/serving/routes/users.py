"""``/v1/users/{user_id}``: what the state knows of a user (``GET``), and the user's erasure (``DELETE``);
``/v1/users?q=``: find users by the start of their id.

Finding users needs the read scope, like reading one: it shows no more than ``GET /v1/users/{user_id}`` would
to the same key. An erased user is gone from the state, so no search finds them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from liverec.serving.auth import ADMIN, AUTH_RESPONSES, READ
from liverec.serving.deps import EngineDep, UserIdPath
from liverec.serving.schemas import ErasureOut, ErrorOut, UserListOut, UserOut

router = APIRouter(tags=["users"], responses=AUTH_RESPONSES)

#: The most user ids one search answers.
MAX_SEARCH_LIMIT = 100


@router.get(
    "/v1/users",
    summary="Find users whose id starts with q (with pseudonymised ids: only the exact id q)",
    dependencies=[READ],
    response_model=UserListOut,
)
def find_users(
    engine: EngineDep,
    q: Annotated[str, Query(max_length=256, description="the start of the user id")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT, description="how many ids at most")] = 20,
) -> dict[str, Any]:
    return {"user_ids": engine.find_users(q.strip(), limit), "pseudonymised": engine.backend.pseudonymise is not None}


@router.get(
    "/v1/users/{user_id}",
    summary="What the state knows of a user",
    dependencies=[READ],
    responses={200: {"model": UserOut}, 404: {"model": ErrorOut, "description": "no events for this user"}},
)
def get_user(user_id: UserIdPath, engine: EngineDep) -> dict[str, Any]:
    recent = engine.user_history(user_id)
    if recent is None:
        raise HTTPException(404, detail=f"user_id {user_id!r}: no events for this user")
    return {"user_id": user_id, "recent_items": recent}


@router.delete("/v1/users/{user_id}", summary="Erase a user everywhere (idempotent)", dependencies=[ADMIN])
def forget_user(user_id: UserIdPath, engine: EngineDep) -> ErasureOut:
    """Delete the user's events from the log (leaving no copy), drop them from the state and its snapshot, and
    rewrite every model version that keeps per-user parameters; a user with nothing left answers zero counts."""
    report = engine.forget_user(user_id)
    return ErasureOut(
        user_id=report.user_id,
        events_deleted=report.events_deleted,
        state=report.state,
        models_rewritten=report.models_rewritten,
        trained_on=report.trained_on,
        erased_at=report.erased_at,
        impressions_deleted=report.impressions_deleted,
    )
