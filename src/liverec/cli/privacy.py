"""``liverec forget-user``: erase one user from a data folder, with or without a server running on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from liverec.cli.common import cli_actor, load_settings
from liverec.errors import UsageError
from liverec.events.schema import MAX_ID_LENGTH

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    forget = subparsers.add_parser(
        "forget-user",
        help="erase a user: their events, state and per-user model parameters",
        description="Erase USER_ID from the data folder (what DELETE /v1/users/{id} does): the user's events leave "
        "the event log with no copy left behind, the state and its snapshot drop the user, and every registered "
        "model version that keeps per-user parameters is rewritten without them. A server running on the same "
        "folder (or Redis prefix) follows within a second. Idempotent: a second run reports zero events.",
    )
    forget.add_argument("user_id", metavar="USER_ID", help="the user id as clients send it")
    forget.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="folder holding the event log, state and model registry"
    )
    forget.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")
    forget.add_argument("--json", action="store_true", help="print one JSON object")
    forget.set_defaults(handler=run_forget_user)


def run_forget_user(args: argparse.Namespace) -> int:
    from liverec.access import open_audit_log, user_target
    from liverec.backends import open_backend

    # the id rule of every route: 1 to 256 characters as given, not blank; surrounding whitespace is stripped
    user_id = args.user_id.strip()
    if not user_id or len(args.user_id) > MAX_ID_LENGTH:
        raise UsageError(f"USER_ID: expected 1 to {MAX_ID_LENGTH} characters, not blank, got {args.user_id!r}")
    settings = load_settings(args)
    with open_backend(settings) as backend:
        backend.require_log("nothing to erase")
        report = backend.forget_user(user_id)
    open_audit_log(settings).record(actor=cli_actor(), action="forget-user", target=user_target(user_id), status="ok")
    out = {k: v for k, v in report.to_json().items() if k != "epoch"}
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(f"{k:<18}{', '.join(v) if isinstance(v, list) else v}" for k, v in out.items()))
    return 0
