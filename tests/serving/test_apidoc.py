"""docs/api.md is what ``liverec openapi --markdown`` writes from the app's OpenAPI document, scopes included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from liverec.cli import main
from liverec.serving.apidoc import GENERATOR, ApiDocument, api_document, render_markdown
from liverec.settings import Settings

API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
OPEN_ROUTES = {("get", "/health"), ("get", "/ready")}  # the only routes that need no key (auth.py)


@pytest.fixture(scope="module")
def default_api() -> Iterator[ApiDocument]:
    """The document with the default settings, whatever LIVEREC_* this process was started with."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("LIVEREC_")]:
            patch.delenv(name)
        yield api_document(Settings())


def test_docs_api_md_is_what_the_generator_writes_now(default_api: ApiDocument) -> None:
    written = render_markdown(default_api)
    assert API_PAGE.read_text() == written, (
        f"docs/api.md differs from the app's OpenAPI document: regenerate it with `{GENERATOR}` (default settings, "
        "no LIVEREC_* variables set)"
    )


def test_every_operation_is_on_the_page_with_its_scope_and_every_status_code(default_api: ApiDocument) -> None:
    page = render_markdown(default_api)
    operations = [
        (method, path, operation)
        for path, item in default_api.document["paths"].items()
        for method, operation in item.items()
    ]
    assert len(operations) >= 25
    assert set(default_api.scopes) == {(method, path) for method, path, _ in operations}
    for method, path, operation in operations:
        scope = default_api.scopes[(method, path)]
        assert (scope is None) == ((method, path) in OPEN_ROUTES), (method, path, scope)
        section = page.split(f"\n## {method.upper()} `{path}`\n", 1)[1].split("\n## ", 1)[0]
        assert f"Scope: `{scope}`." in section if scope else "Scope: none (open to anyone)." in section
        for status, response in operation["responses"].items():
            assert f"| {status} | {' '.join(response['description'].split())} |" in section, (method, path, status)
        for parameter in operation.get("parameters", []):
            assert f"| `{parameter['name']}` | {parameter['in']} |" in section, (method, path, parameter["name"])
    assert default_api.scopes[("post", "/v1/events")] == "ingest"
    assert default_api.scopes[("put", "/v1/items/{item_id}")] == "catalog"
    assert default_api.scopes[("get", "/v1/users/{user_id}/recommendations")] == "read"  # the router's dependency
    assert default_api.scopes[("post", "/v1/keys")] == "admin"


def test_limits_and_body_schemas_are_on_the_page(default_api: ApiDocument) -> None:
    page = render_markdown(default_api)
    events = page.split("\n## POST `/v1/events`\n", 1)[1].split("\n## ", 1)[0]
    assert "- `application/json`: EventIn or array of EventIn" in events
    assert "- `application/x-ndjson`: one EventIn object per line" in events
    recommendations = page.split("\n## GET `/v1/users/{user_id}/recommendations`\n", 1)[1].split("\n## ", 1)[0]
    assert "| `k` | query | integer | no | `10` | 1 ≤ value ≤ 1000 | how many items |" in recommendations
    for schema in ("EventIn", "RecommendationOut", "ItemIn", "ErrorOut"):
        assert f"\n### {schema}\n" in page


def test_the_command_prints_the_document_and_writes_the_page(
    default_api: ApiDocument, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("LIVEREC_")]:
        monkeypatch.delenv(name)
    assert main(["openapi"]) == 0
    assert json.loads(capsys.readouterr().out) == default_api.document
    page = tmp_path / "api.md"
    assert main(["openapi", "--markdown", str(page)]) == 0
    operations = sum(len(item) for item in default_api.document["paths"].values())
    assert capsys.readouterr().out == f"wrote {page} ({operations} operations)\n"
    assert page.read_text() == render_markdown(default_api)
    monkeypatch.setenv("LIVEREC_MAX_K", "50")  # the limits on the page follow the settings
    assert main(["openapi", "--markdown", str(page)]) == 0
    assert "| `k` | query | integer | no | `10` | 1 ≤ value ≤ 50 | how many items |" in page.read_text()


def test_help() -> None:
    done = subprocess.run([sys.executable, "-m", "liverec.cli", "openapi", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: liverec openapi [-h] [--markdown FILE]" in done.stdout
