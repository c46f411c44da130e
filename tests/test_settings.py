"""Settings: TOML file, LIVEREC_* environment, flags; invalid values are errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from liverec.settings import Settings


def test_defaults_toml_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().port == 8000
    config = tmp_path / "liverec.toml"
    config.write_text("port = 9001\nmax_history = 50\n[event_types]\nview = 1.0\nbuy = 5.0\n")
    from_file = Settings.load(config)
    assert (from_file.port, from_file.max_history, from_file.event_types) == (9001, 50, {"view": 1.0, "buy": 5.0})
    monkeypatch.setenv("LIVEREC_PORT", "9002")
    monkeypatch.setenv("LIVEREC_EVENT_TYPES__BUY", "7")
    from_env = Settings.load(config)
    assert from_env.port == 9002 and from_env.event_types["buy"] == 7.0, "environment beats the file"
    assert Settings.load(config, port=9003).port == 9003, "flags beat the environment"
    assert Settings.load(config, port=None).port == 9002, "an unset flag changes nothing"
    assert from_env.describe()["data_dir"] == "liverec-data"


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("port = 70000", "port"),
        ("prot = 80", "prot"),
        ("synchronous = 'OFF'", "synchronous"),
        ("[event_types]\nview = -1", "event_types"),
    ],
)
def test_invalid_settings_name_the_field(tmp_path: Path, toml: str, field: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ValidationError) as error:
        Settings.load(config)
    assert field in str(error.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.toml"):
        Settings.load(tmp_path / "nowhere.toml")


def test_none_unsets_an_optional_setting_and_a_worker_gets_exactly_the_parent_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from liverec.serving.server import worker_environment

    monkeypatch.setenv("LIVEREC_GATE_MAX_SHARE", "none")
    assert Settings.load().gate_max_share is None
    monkeypatch.delenv("LIVEREC_GATE_MAX_SHARE")
    parent = Settings.load(retrain_interval_s=60.0, port=8123).model_copy(
        update={"gate_max_share": None, "updater_every_events": None}
    )
    assert parent.gate_max_share is None and parent.updater_every_events is None
    for name, value in worker_environment(parent).items():
        monkeypatch.setenv(name, value)
    child = Settings.load()
    assert child == parent  # None included: not left to the child's defaults (gate_max_share 0.25, 1000 events)


def test_a_renamed_setting_is_refused_with_its_new_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old name must not be silently ignored: the deployment would run with the default instead."""
    config = tmp_path / "old.toml"
    config.write_text("updater_replay_ratio = 0\n")
    with pytest.raises(ValidationError, match="renamed updater_rehearsal_ratio"):
        Settings.load(config)
    monkeypatch.setenv("LIVEREC_UPDATER_REPLAY_RATIO", "0")
    with pytest.raises(ValidationError, match=r"LIVEREC_UPDATER_REHEARSAL_RATIO"):
        Settings.load()
    monkeypatch.delenv("LIVEREC_UPDATER_REPLAY_RATIO")
    monkeypatch.setenv("LIVEREC_UPDATER_REHEARSAL_RATIO", "0")
    assert Settings.load().updater_rehearsal_ratio == 0.0


def test_the_pseudonym_secret_is_never_printed_but_reaches_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from liverec.serving.server import worker_environment

    parent = Settings(pseudonym_secret="hunter2-secret", retention_days=30)
    assert "hunter2-secret" not in str(parent.describe()) and "hunter2-secret" not in repr(parent)
    assert parent.describe()["pseudonym_secret"] == "**********"
    for name, value in worker_environment(parent).items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.pseudonym_secret is not None and child.pseudonym_secret.get_secret_value() == "hunter2-secret"
    assert child.retention_days == 30.0 and Settings().model_dump() == parent.model_dump()
    monkeypatch.setenv("LIVEREC_PSEUDONYM_SECRET", "none")
    assert Settings().pseudonym_secret is None
