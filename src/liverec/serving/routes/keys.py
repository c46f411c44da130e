"""API keys over HTTP (admin): list, create (the key is in the answer, once), revoke.

The same store as ``liverec keys``; a new or revoked key takes effect on every replica within a second.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from liverec.errors import UsageError
from liverec.serving.auth import ADMIN, AUTH_RESPONSES, Guard
from liverec.serving.schemas import KeyCreated, KeyIn, KeyOut

router = APIRouter(tags=["keys"], dependencies=[ADMIN], responses=AUTH_RESPONSES)

KeyName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="the key's name")]


def _guard(request: Request) -> Guard:
    guard: Guard = request.app.state.guard
    return guard


@router.get("/v1/keys", summary="List the API keys (names, scopes; never the keys)")
async def list_keys(request: Request) -> dict[str, list[KeyOut]]:
    keys = await run_in_threadpool(_guard(request).keys.keys)
    return {"keys": [KeyOut(**key.public()) for key in keys]}


@router.post(
    "/v1/keys",
    status_code=201,
    summary="Create an API key; the answer holds the key, shown this once",
    responses={409: {"description": "a key of that name exists"}},
)
async def create_key(request: Request, body: KeyIn) -> KeyCreated:
    try:
        key, token = await run_in_threadpool(_guard(request).keys.create, body.name, frozenset(body.scopes))
    except UsageError as error:
        raise HTTPException(409, detail=str(error).removeprefix("--name: ")) from None
    return KeyCreated(**key.public(), key=token)


@router.delete(
    "/v1/keys/{name}",
    status_code=204,
    summary="Revoke an API key",
    responses={404: {"description": "no key of that name"}},
)
async def revoke_key(request: Request, name: KeyName) -> Response:
    if not await run_in_threadpool(_guard(request).keys.revoke, name):
        raise HTTPException(404, detail=f"name {name!r}: no such key")
    return Response(status_code=204)
