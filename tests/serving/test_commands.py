"""`liverec import | train | rebuild` on real files: resumable import, registered versions, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liverec.cli import main
from liverec.registry import ModelRegistry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_import_is_resumable_then_train_and_rebuild(
    backend: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "redis":  # the same commands, configured for Redis by environment only
        monkeypatch.setenv("LIVEREC_BACKEND", "redis")
        monkeypatch.setenv("LIVEREC_REDIS_URL", request.getfixturevalue("redis_url"))
        monkeypatch.setenv("LIVEREC_REDIS_PREFIX", request.getfixturevalue("redis_prefix"))
    data_dir = str(tmp_path / "data")
    code, out, _ = run(capsys, "import", "--synthetic", "3000", "--data-dir", data_dir, "--limit", "2000")
    assert code == 0 and "2000 new events" in out
    code, out, _ = run(capsys, "import", "--synthetic", "3000", "--data-dir", data_dir)
    assert code == 0 and "1000 new events, 2000 already in the log" in out and "holds 3000 events" in out

    code, out, err = run(capsys, "train", "--data-dir", data_dir, "--model", "itemknn", "--json", "--quiet")
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == "v0001" and report["promoted"] and 0 < report["metrics"]["ndcg@10"] <= 1
    manifest = ModelRegistry(Path(data_dir) / "models").manifest("v0001")
    assert manifest["training"]["n_events"] == 3000 and manifest["training"]["last_offset"] == 3000
    code, out, _ = run(capsys, "train", "--data-dir", data_dir, "--model", "pop", "--no-promote", "--json")
    assert code == 0 and json.loads(out)["promoted"] is False
    assert ModelRegistry(Path(data_dir) / "models").promoted() == "v0001"

    code, out, _ = run(capsys, "rebuild", "--data-dir", data_dir)
    assert code == 0 and "3000 events (offset 3000)" in out, out
    assert (Path(data_dir) / "state.npz").exists() == (backend == "embedded")  # Redis holds its state itself


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--data-dir", "{tmp}/empty"], "no event log"),
        (["train", "--data-dir", "{tmp}", "--model", "nope"], "--model: unknown model 'nope'"),
        (["rebuild", "--data-dir", "{tmp}/empty"], "no event log"),
        (["serve", "--config", "{tmp}/missing.toml"], "missing.toml"),
        (["demo", "--live-fraction", "1.5"], "--live-fraction"),
    ],
)
def test_engine_commands_fail_with_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run(capsys, "demo", "--smoke", "--data-dir", str(tmp_path), "--port", "0")
    assert code == 2 and "not made by the demo" in err and (tmp_path / "precious.txt").exists()
