"""The catalogue: ``/v1/items/{item_id}`` (put, delete, get)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from liverec.serving.auth import AUTH_RESPONSES, CATALOG, READ
from liverec.serving.deps import EngineDep, ItemIdPath
from liverec.serving.schemas import ItemIn

router = APIRouter()


@router.put("/v1/items/{item_id}", tags=["items"], dependencies=[CATALOG], responses=AUTH_RESPONSES)
def put_item(item_id: ItemIdPath, item: ItemIn, engine: EngineDep) -> dict[str, Any]:
    return engine.put_item(item_id, **item.model_dump())


@router.delete("/v1/items/{item_id}", tags=["items"], status_code=204, dependencies=[CATALOG], responses=AUTH_RESPONSES)
def delete_item(item_id: ItemIdPath, engine: EngineDep) -> Response:
    if not engine.delete_item(item_id):
        raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
    return Response(status_code=204)


@router.get("/v1/items/{item_id}", tags=["items"], dependencies=[READ], responses=AUTH_RESPONSES)
def get_item(item_id: ItemIdPath, engine: EngineDep) -> dict[str, Any]:
    item = engine.get_item(item_id)
    if item is None:
        raise HTTPException(404, detail=f"item_id {item_id!r}: no such item")
    return item
