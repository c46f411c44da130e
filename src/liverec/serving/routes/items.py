"""The catalogue: ``/v1/items/{item_id}`` (put, delete, get) and its search, ``/v1/items?q=``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response

from liverec.serving.auth import AUTH_RESPONSES, CATALOG, READ
from liverec.serving.deps import EngineDep, ItemIdPath
from liverec.serving.schemas import ErrorOut, ItemIn, ItemListOut, ItemOut

router = APIRouter(tags=["items"], responses=AUTH_RESPONSES)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such item (or deleted)"}}

#: The most items one search answers: a page shows them, so nothing ever lists the whole catalogue.
MAX_SEARCH_LIMIT = 100


@router.get(
    "/v1/items",
    dependencies=[READ],
    summary="Search the catalogue: items whose id or title contains q (empty q: the most popular items now)",
    response_model=ItemListOut,
)
def search_items(
    engine: EngineDep,
    q: Annotated[str, Query(max_length=256, description="text in the item id or title (case-insensitive)")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT, description="how many items at most")] = 20,
) -> dict[str, Any]:
    return {"items": engine.search_items(q.strip(), limit)}


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
