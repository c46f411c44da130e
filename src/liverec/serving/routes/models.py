"""The model registry: list versions, promote one, roll back (the engine swaps at once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from liverec.serving.auth import ADMIN, AUTH_RESPONSES, READ
from liverec.serving.deps import EngineDep
from liverec.serving.schemas import ErrorOut

router = APIRouter()


@router.get(
    "/v1/models",
    tags=["models"],
    summary="The versions and the one served",
    dependencies=[READ],
    responses=AUTH_RESPONSES,
)
def models(engine: EngineDep) -> dict[str, Any]:
    return {"serving": engine.model_version, "versions": engine.registry.manifests()}


@router.post(
    "/v1/models/{version}/promote",
    tags=["models"],
    summary="Serve a version now",
    dependencies=[ADMIN],
    responses={**AUTH_RESPONSES, 404: {"model": ErrorOut, "description": "no such version"}},
)
def promote(version: str, engine: EngineDep) -> dict[str, Any]:
    try:
        engine.registry.promote(version, reason="POST /v1/models/{version}/promote")
    except KeyError:
        raise HTTPException(404, detail=f"version {version!r}: no such model version") from None
    engine.maybe_swap_model()
    return {"serving": engine.model_version}


@router.post(
    "/v1/models/rollback",
    tags=["models"],
    summary="Serve the version served before the current one",
    dependencies=[ADMIN],
    responses={**AUTH_RESPONSES, 409: {"model": ErrorOut, "description": "no earlier version to roll back to"}},
)
def rollback(engine: EngineDep) -> dict[str, Any]:
    try:
        version = engine.registry.rollback(reason="POST /v1/models/rollback")
    except LookupError as error:
        raise HTTPException(409, detail=str(error)) from None
    engine.maybe_swap_model()
    return {"serving": engine.model_version, "rolled_back_to": version}
