"""``GET /v1/users/{user_id}``: what the state knows of a user."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from liverec.serving.deps import EngineDep, UserIdPath

router = APIRouter()


@router.get("/v1/users/{user_id}", tags=["users"])
def get_user(user_id: UserIdPath, engine: EngineDep) -> dict[str, Any]:
    recent = engine.user_history(user_id)
    if recent is None:
        raise HTTPException(404, detail=f"user_id {user_id!r}: no events for this user")
    return {"user_id": user_id, "recent_items": recent}
