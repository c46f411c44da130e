"""The catalogue: ``/v1/items/{item_id}`` (put, delete, get)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from liverec.serving.auth import AUTH_RESPONSES, CATALOG, READ
from liverec.serving.deps import EngineDep, ItemIdPath
from liverec.serving.schemas import ErrorOut, ItemIn, ItemOut

router = APIRouter(tags=["items"], responses=AUTH_RESPONSES)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such item (or deleted)"}}


@router.put(
    "/v1/items/{item_id}",
    dependencies=[CATALOG],
    summary="Create or replace an item",
    responses={200: {"model": ItemOut}},
)
def put_item(item_id: ItemIdPath, item: ItemIn, engine: EngineDep) -> dict[str, Any]:
    return engine.put_item(item_id, **item.model_dump())


@router.delete(
    "/v1/items/{item_id}", status_code=204, dependencies=[CATALOG], summary="Delete an item", responses=_NOT_FOUND
)
def delete_item(item_id: ItemIdPath, engine: EngineDep) -> Response:
    if not engine.delete_item(item_id):
        raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
    return Response(status_code=204)


@router.get(
    "/v1/items/{item_id}",
    dependencies=[READ],
    summary="An item and its statistics",
    responses={200: {"model": ItemOut}, **_NOT_FOUND},
)
def get_item(item_id: ItemIdPath, engine: EngineDep) -> dict[str, Any]:
    item = engine.get_item(item_id)
    if item is None or item.get("deleted"):
        raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
    return item
