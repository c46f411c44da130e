"""``liverec keys create|list|revoke``: the API keys of a data folder (and of its Redis, with that backend)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from liverec.cli.common import cli_actor, load_settings

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    from liverec.access import SCOPES

    scopes = "; ".join(f"{name}: {what}" for name, what in SCOPES.items())
    keys = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys for liverec serve. Once one key exists, every route but /health and /ready needs one "
        "(Authorization: Bearer KEY, or X-API-Key: KEY); only a hash of each key is stored, in DIR/keys.json and, "
        f"with LIVEREC_BACKEND=redis, in Redis (every replica sees a change within a second). Scopes: {scopes}.",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create a key and print it (last line of stdout, shown once)", description="Create a key."
    )
    _add_folder_options(create)
    create.add_argument("--name", required=True, help="a name to list and revoke it by (letters, digits, _.@-)")
    create.add_argument("--scopes", required=True, help=f"comma-separated, of: {', '.join(SCOPES)}")
    create.set_defaults(handler=run_create)
    listing = actions.add_parser("list", help="list the keys (names and scopes; never the keys)")
    _add_folder_options(listing)
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key by name")
    _add_folder_options(revoke)
    revoke.add_argument("name", help="the key's name")
    revoke.set_defaults(handler=run_revoke)


def _add_folder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="the data folder (default: the data_dir setting, liverec-data)"
    )
    parser.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")


def run_create(args: argparse.Namespace) -> int:
    from liverec.access import open_audit_log, open_key_store, parse_scopes

    settings = load_settings(args)
    scopes = parse_scopes(args.scopes)
    key, token = open_key_store(settings).create(args.name, scopes)
    open_audit_log(settings).record(actor=cli_actor(), action="keys create", target=f"name={key.name}", status="ok")
    print(f"created key {key.name!r} (id {key.key_id}) with scope(s) {', '.join(sorted(key.scopes))}.")
    print("The key is shown once and not stored; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY':")
    print(token)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from liverec.access import open_key_store

    keys = open_key_store(load_settings(args)).keys()
    if args.json:
        print(json.dumps({"keys": [key.public() for key in keys]}))
    elif not keys:
        print("no keys: every route is open (create one with liverec keys create)")
    else:
        for key in keys:
            print(f"{key.name:<24}{key.key_id:<14}{','.join(sorted(key.scopes))}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from liverec.access import open_audit_log, open_key_store
    from liverec.errors import UsageError

    settings = load_settings(args)
    if not open_key_store(settings).revoke(args.name):
        raise UsageError(f"name: no key named {args.name!r}")
    open_audit_log(settings).record(actor=cli_actor(), action="keys revoke", target=f"name={args.name}", status="ok")
    print(f"revoked key {args.name!r}")
    return 0
