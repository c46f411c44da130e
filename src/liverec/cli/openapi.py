"""``liverec openapi``: the HTTP API's OpenAPI document, as JSON or as the Markdown reference page docs/api.md."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from liverec.cli.common import load_settings

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "openapi",
        help="print the API's OpenAPI document, or write the Markdown API reference (docs/api.md)",
        description="The OpenAPI document that liverec serve answers at /openapi.json, built from the settings "
        "(--config, LIVEREC_*; limits such as max_k follow them) over a throw-away engine: no data folder or "
        "Redis is touched. Without --markdown it prints the document as JSON; with --markdown FILE it writes the "
        "reference page (every route: method, path, summary, scope, parameters and their limits, request body, "
        "every status code; then the schemas). docs/api.md is `liverec openapi --markdown docs/api.md` with the "
        "default settings.",
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the Markdown reference to FILE")
    parser.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from liverec.serving.apidoc import api_document, render_markdown

    api = api_document(load_settings(args))
    if args.markdown is None:
        print(json.dumps(api.document, indent=2))
        return 0
    args.markdown.write_text(render_markdown(api))
    operations = sum(len(item) for item in api.document["paths"].values())
    print(f"wrote {args.markdown} ({operations} operations)")
    return 0
