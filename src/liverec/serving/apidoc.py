"""The API reference page (docs/api.md), written from the app's own OpenAPI document.

The page is generated, never hand-edited, so it cannot drift from the server: ``liverec openapi --markdown
docs/api.md`` writes it and ``tests/serving/test_apidoc.py`` fails when the committed page differs from what the
app says now. Every operation gets its method and path, summary, scope, parameters with their limits, request
body schema and every status code with its meaning; the schemas the bodies name follow, field by field.

The scope a route needs is not part of the OpenAPI document (the document only says that a key goes in
``Authorization`` or ``X-API-Key``); it is read from the route's dependencies, which hold one of the
:mod:`liverec.serving.auth` constants.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from liverec.serving.app import create_app
from liverec.serving.auth import ADMIN, CATALOG, INGEST, READ
from liverec.serving.engine import Engine
from liverec.settings import Settings

__all__ = ["ApiDocument", "api_document", "render_markdown", "route_scopes"]

#: What each :mod:`liverec.serving.auth` constant asks of a key.
_SCOPES: dict[Any, str] = {
    INGEST.dependency: "ingest",
    READ.dependency: "read",
    CATALOG.dependency: "catalog",
    ADMIN.dependency: "admin",
}
_METHODS = ("get", "put", "post", "delete", "patch")

GENERATOR = "liverec openapi --markdown docs/api.md"


@dataclass(frozen=True)
class ApiDocument:
    """The OpenAPI document of an app and the scope of each operation, keyed by (method, path)."""

    document: dict[str, Any]
    scopes: dict[tuple[str, str], str | None]


def route_scopes(app: FastAPI) -> dict[tuple[str, str], str | None]:
    """(lower-case method, path) -> the scope the route needs, or None for a route open to anyone.

    Read from each route's dependencies as FastAPI resolves them (the router's ``dependencies`` included).
    """
    scopes: dict[tuple[str, str], str | None] = {}
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        if dependant is None or route.path is None:  # a mount (/ui) or a plain Starlette route (/docs)
            continue
        found = {_SCOPES[d.call] for d in dependant.dependencies if d.call in _SCOPES}
        if len(found) > 1:
            raise ValueError(f"{route.path}: expected at most one scope, got {sorted(found)}")
        for method in route.methods or ():
            scopes[(method.lower(), route.path)] = found.pop() if found else None
    return scopes


def api_document(settings: Settings) -> ApiDocument:
    """The document of the app ``liverec serve`` would run with ``settings`` (its limits come from them).

    The app is built over a throw-away embedded engine in a temporary folder: nothing of ``settings.data_dir``
    or of a Redis is read or written.
    """
    with tempfile.TemporaryDirectory(prefix="liverec-openapi-") as folder:
        engine = Engine(settings.model_copy(update={"data_dir": folder, "backend": "embedded"}), background=False)
        try:
            app = create_app(engine)
            return ApiDocument(app.openapi(), route_scopes(app))
        finally:
            engine.close()


# -- schemas as short text ---------------------------------------------------------------------------------
def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_text(schema: Mapping[str, Any]) -> str:
    """A schema as a short type: ``string``, ``integer``, ``array of ItemIn``, ``EventIn or array of EventIn``."""
    if "$ref" in schema:
        return str(_ref_name(schema["$ref"]))
    for key, joiner in (("anyOf", " or "), ("oneOf", " or "), ("allOf", " and ")):
        if key in schema:
            return joiner.join(type_text(part) for part in schema[key])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_text(schema.get('items', {}))}"
    if kind == "object" and "title" in schema and "properties" in schema:
        return str(schema["title"])
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_text(schema['additionalProperties'])}"
    return str(kind or "any")


def limits_text(schema: Mapping[str, Any]) -> str:
    """The limits a schema puts on a value (its alternatives' too): ranges, lengths, item counts, a pattern."""
    parts: list[str] = []
    for part in [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]:
        for low, high, what in (
            ("minimum", "maximum", "value"),
            ("minLength", "maxLength", "length"),
            ("minItems", "maxItems", "items"),
        ):
            if low in part or high in part:
                text = what
                if low in part:
                    text = f"{part[low]} ≤ {text}"
                if high in part:
                    text = f"{text} ≤ {part[high]}"
                parts.append(text)
        if "exclusiveMinimum" in part:
            parts.append(f"value > {part['exclusiveMinimum']}")
        if "exclusiveMaximum" in part:
            parts.append(f"value < {part['exclusiveMaximum']}")
        if "pattern" in part:
            parts.append(f"matches `{part['pattern']}`")
        items = part.get("items")
        if isinstance(items, dict) and "$ref" not in items:
            inner = limits_text(items)
            if inner:
                parts.append(f"each: {inner}")
    return "; ".join(dict.fromkeys(parts))


def _cell(text: Any) -> str:
    """Text fit for one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|") if text not in (None, "") else ""


def _named_schemas(schema: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    """The schemas a body names: (name, inline schema or None for a component reference), depth first."""
    if "$ref" in schema:
        yield _ref_name(schema["$ref"]), None
        return
    if schema.get("type") == "object" and "title" in schema and "properties" in schema:
        yield str(schema["title"]), schema
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, []):
            yield from _named_schemas(part)
    if isinstance(schema.get("items"), dict):
        yield from _named_schemas(schema["items"])
    for value in schema.get("properties", {}).values():
        yield from _named_schemas(value)


# -- the page ----------------------------------------------------------------------------------------------
def render_markdown(api: ApiDocument) -> str:
    """docs/api.md: an index of the operations, one section per operation, then the schemas."""
    document = api.document
    operations = [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in _METHODS
    ]
    components: dict[str, Any] = document.get("components", {}).get("schemas", {})
    inline: dict[str, Mapping[str, Any]] = {}
    lines = [
        "# The HTTP API",
        "",
        f"<!-- Generated by `{GENERATOR}` from the app's OpenAPI document; do not edit by hand. -->",
        "",
        f"{document['info']['title']} {document['info']['version']}: {document['info'].get('description', '')}",
        "This page is the OpenAPI document that `liverec serve` answers at `GET /openapi.json` (its UI at `/docs`),",
        "written out with the default settings (limits such as `max_k` and `max_body_bytes` follow the settings):",
        f"`{GENERATOR}`.",
        "",
        "A key goes in `Authorization: Bearer KEY` or `X-API-Key: KEY`. Until a key exists (or with the `auth`",
        "setting off) no route needs one; then every route with a scope answers 401 without a known key and 403 when",
        "the key lacks the scope. `admin` covers every scope. Routes without a scope are open to anyone.",
        "",
        "| method | path | scope | summary |",
        "|---|---|---|---|",
    ]
    for method, path, operation in operations:
        anchor = _anchor(method, path)
        scope = api.scopes.get((method, path))
        lines.append(
            f"| {method.upper()} | [`{path}`](#{anchor}) | {scope or 'none'} | {_cell(operation.get('summary'))} |"
        )
    for method, path, operation in operations:
        scope = api.scopes.get((method, path))
        lines += ["", f"## {method.upper()} `{path}`", ""]
        if operation.get("summary"):
            lines.append(f"{' '.join(operation['summary'].split())}.")
        if operation.get("description"):
            lines += ["", " ".join(operation["description"].split())]
        lines += ["", f"Scope: {f'`{scope}`' if scope else 'none (open to anyone)'}."]
        parameters = operation.get("parameters", [])
        if parameters:
            lines += [
                "",
                "| parameter | in | type | required | default | limits | meaning |",
                "|---|---|---|---|---|---|---|",
            ]
            for parameter in parameters:
                schema = parameter.get("schema", {})
                default = f"`{json.dumps(schema['default'])}`" if "default" in schema else ""
                needed = "yes" if parameter.get("required") else "no"
                lines.append(
                    f"| `{parameter['name']}` | {parameter['in']} | {_cell(type_text(schema))} | {needed} | "
                    f"{_cell(default)} | {_cell(limits_text(schema))} | "
                    f"{_cell(parameter.get('description') or schema.get('description'))} |"
                )
        body = operation.get("requestBody")
        if body:
            lines += ["", f"Request body ({'required' if body.get('required') else 'optional'}):"]
            if body.get("description"):
                lines[-1] += f" {' '.join(body['description'].split())}."
            lines.append("")
            for media_type, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                text = type_text(schema) if schema.get("type") != "string" else schema.get("description", "text")
                lines.append(f"- `{media_type}`: {text}")
                for name, found in _named_schemas(schema):
                    if found is not None:
                        inline.setdefault(name, found)
        lines += ["", "| status | meaning | body |", "|---|---|---|"]
        for status, response in sorted(operation.get("responses", {}).items()):
            bodies = [
                f"{_cell(type_text(content['schema']))} ({media_type})" if "schema" in content else media_type
                for media_type, content in response.get("content", {}).items()
            ]
            lines.append(f"| {status} | {_cell(response.get('description'))} | {', '.join(bodies)} |")
    lines += ["", "## Schemas", "", "Fields marked *yes* are required; the rest may be left out."]
    for name, schema in sorted({**components, **inline}.items()):
        lines += ["", f"### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        properties = schema.get("properties", {})
        if not properties:
            lines.append(f"{type_text(schema)}.")
            continue
        required = set(schema.get("required", []))
        lines += ["| field | type | required | default | limits | meaning |", "|---|---|---|---|---|---|"]
        for field_name, field in properties.items():
            default = f"`{json.dumps(field['default'])}`" if "default" in field else ""
            lines.append(
                f"| `{field_name}` | {_cell(type_text(field))} | {'yes' if field_name in required else 'no'} | "
                f"{_cell(default)} | {_cell(limits_text(field))} | {_cell(field.get('description'))} |"
            )
    return "\n".join(lines) + "\n"


def _anchor(method: str, path: str) -> str:
    """GitHub's anchor of the heading ``METHOD `path```: lower case, punctuation but ``-`` and ``_`` dropped,
    spaces to ``-``."""
    heading = f"{method} {path}".lower()
    return "".join(c for c in heading if c.isalnum() or c in "-_ ").replace(" ", "-")
