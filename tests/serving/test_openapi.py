"""The OpenAPI document, checked by an outside client: schemathesis, every check, against a real `liverec serve`
with access control on (an admin key, so every operation is reached).

Schemathesis generates requests from the document (valid ones, invalid ones, and sequences such as create
then delete) and checks each answer: no 5xx, every status code and content type documented, every body as
the schema says, valid input accepted, invalid input refused, ``Allow`` on 405, auth not ignored.
The one rule a schema cannot state (an event's timestamp against the server's clock) is handled by
``schemathesis_hooks.py``; the settings are in ``schemathesis.toml`` beside this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Server
from .test_auth import create_key

HERE = Path(__file__).resolve().parent
#: Test cases per operation and phase: enough to find what the full run finds here (100 found nothing more).
MAX_EXAMPLES = 40


def test_schemathesis_finds_nothing(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = Server(data_dir)
    try:
        key = create_key(server, "schemathesis", "admin")
        command = [
            sys.executable, "-m", "schemathesis.cli",
            "--config-file", str(HERE / "schemathesis.toml"),
            "run", f"{server.url}/openapi.json",
            "--checks", "all",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", "17",
            "--generation-database", "none",
            "--workers", "1",
            "--header", f"Authorization: Bearer {key}",
            "--no-color",
        ]  # fmt: skip
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(HERE)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=data_dir, timeout=600)
        output = done.stdout + done.stderr
    finally:
        server.stop()
    assert done.returncode == 0, output[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert cases is not None, output[-3000:]
    generated, passed = int(cases[1]), int(cases[2])
    with capsys.disabled():  # the count is part of the result: shown in every run, not only on failure
        print(
            f"\nschemathesis: {generated} cases generated, {passed} passed, every check, {MAX_EXAMPLES} per operation"
        )
    assert generated == passed and generated > 500, output[-3000:]
    assert re.search(r"Tested: (\d+)", output) and "Selected: " in output
    assert "Traceback" not in server.output(), server.output()[-3000:]
