"""The command line, end to end: real files in, JSON and ranking files out, readable errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from liverec.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def recompute(rankings: Path) -> dict[str, float]:
    """NDCG@10 and Recall@10 from the saved files alone, with pandas (independent of liverec.evaluation)."""
    ranked = pd.read_csv(rankings, dtype={"user_id": str, "item_id": str})
    targets = pd.read_csv(f"{rankings}.targets.csv", dtype={"user_id": str, "item_id": str})
    n_targets = targets.groupby("user_id").size()
    hits = ranked.merge(targets, on=["user_id", "item_id"])
    hits = hits[hits["rank"] <= 10]
    dcg = (1.0 / (hits["rank"] + 1).map(math.log2)).groupby(hits["user_id"]).sum()
    idcg = n_targets.map(lambda n: sum(1.0 / math.log2(r + 2) for r in range(min(n, 10))))
    ndcg = (dcg.reindex(n_targets.index, fill_value=0.0) / idcg).mean()
    recall = (hits.groupby("user_id").size().reindex(n_targets.index, fill_value=0) / n_targets).mean()
    return {"ndcg@10": float(ndcg), "recall@10": float(recall)}


@pytest.mark.parametrize("model", ["pop", "pop-decay", "pop-recent", "itemknn", "ease", "mf-bpr", "mf-bce", "mf-mse"])
def test_evaluate_ml100k_rankings_recompute(
    model: str, ml100k_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The saved rankings give the reported metrics again; what is checked does not depend on how well the model
    fits, so MF trains three epochs here (its 25-40 took 5-21 s per model)."""
    out_file = tmp_path / "rankings.csv"
    quick = ["--param", "n_epochs=3"] if model.startswith("mf-") else []
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--data",
        str(ml100k_path),
        "--model",
        model,
        "--protocol",
        "loo",
        "--json",
        "--save-rankings",
        str(out_file),
        "--quiet",
        *quick,
    )
    assert code == 0
    report = json.loads(out)
    assert report["dataset"]["users"] == 943 and report["evaluated_users"] == 943
    for key in ("ndcg@10", "recall@10", "hr@10", "mrr@10", "coverage@10"):
        assert key in report["metrics"]
    independent = recompute(out_file)
    assert independent["ndcg@10"] == pytest.approx(report["metrics"]["ndcg@10"], abs=1e-6)
    assert independent["recall@10"] == pytest.approx(report["metrics"]["recall@10"], abs=1e-6)
    assert {"fit", "evaluate"} <= set(report["seconds"])


def test_evaluate_temporal(ml100k_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--data",
        str(ml100k_path),
        "--model",
        "ease",
        "--protocol",
        "temporal",
        "--k",
        "5,10",
        "--json",
        "--quiet",
    )
    assert code == 0
    report = json.loads(out)
    assert report["protocol"]["name"] == "temporal"
    assert report["protocol"]["train_events"] == 80_000
    assert report["protocol"]["test_users_unseen_in_train"] > 0
    assert "ndcg@5" in report["metrics"] and "ndcg@10" in report["metrics"]


def test_sampled_protocol_is_labelled_and_flatters(ml100k_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--data",
        str(ml100k_path),
        "--model",
        "ease",
        "--sampled-negatives",
        "100",
        "--json",
        "--quiet",
    )
    assert code == 0
    report = json.loads(out)
    assert "SAMPLED" in report["sampled_metrics"]["description"]
    assert report["sampled_metrics"]["negatives"] == 100
    # one target among 101 candidates is far easier to hit than among the whole catalogue
    assert report["sampled_metrics"]["metrics"]["hr@10"] > 2 * report["metrics"]["hr@10"]


@pytest.mark.slow
def test_rating_task(ml100k_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--data",
        str(ml100k_path),
        "--model",
        "mf-mse",
        "--task",
        "rating",
        "--protocol",
        "temporal",
        "--json",
        "--quiet",
    )
    assert code == 0
    metrics = json.loads(out)["metrics"]
    assert 0.5 < metrics["mae"] < metrics["rmse"] < 1.3


def test_table_output_and_params(ml100k_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "evaluate", "--data", str(ml100k_path), "--model", "itemknn", "--param", "n_neighbors=10", "--quiet"
    )
    assert code == 0
    assert "ndcg@10" in out and '"n_neighbors": 10' in out


def test_optional_model_params_parse_their_type_or_none() -> None:
    from liverec.errors import UsageError
    from liverec.models import parse_params

    assert parse_params("sasrec", ["window_gap_s=30", "future_window=3"]) == {"window_gap_s": 30.0, "future_window": 3}
    assert parse_params("sasrec", ["window_gap_s=none", "loss_exclude_seen=None"]) == {
        "window_gap_s": None,
        "loss_exclude_seen": None,
    }
    with pytest.raises(UsageError, match="--param dropout: expected a float, got 'none'"):
        parse_params("sasrec", ["dropout=none"])  # not an optional setting


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2,extra\n", "line 3"),
        ("user_id,timestamp\nu1,1\n", "item_id"),
        ("user_id,item_id,timestamp\nu1,i1,1\nu2,i2,yesterday-ish\n", "line 3"),
    ],
    ids=["bad-line", "missing-column", "non-numeric-timestamp"],
)
def test_malformed_files_exit_nonzero_with_one_line(
    content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(content)
    code, out, err = run_cli(capsys, "evaluate", "--data", str(path), "--model", "pop")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "events.csv" in lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "nope"], "--model: unknown model 'nope'"),
        (["--model", "pop", "--k", "ten"], "--k"),
        (["--model", "itemknn", "--param", "n_neighbours=3"], "no parameter 'n_neighbours'"),
        (["--model", "itemknn", "--param", "n_neighbors=lots"], "expected a int"),
    ],
)
def test_bad_arguments(argv: list[str], needle: str, ml100k_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--data", str(ml100k_path), *argv)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "evaluate", "--data", str(tmp_path / "nowhere.csv"), "--model", "pop")
    assert code == 2 and "nowhere.csv" in err


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """In process (the ``python -m liverec.cli`` entry point is run by the tests that start servers and workers)."""
    for command in (
        "evaluate",
        "replay",
        "info",
        "generate",
        "models",
        "compare",
        "demo",
        "import",
        "train",
        "serve",
        "rebuild",
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and "usage: liverec" in capsys.readouterr().out, command


def test_generate_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stream.csv"
    code, out, _ = run_cli(
        capsys, "generate", "--events", "5000", "--users", "200", "--items", "100", "--output", str(path)
    )
    assert code == 0 and path.exists()
    code, out, _ = run_cli(capsys, "evaluate", "--data", str(path), "--model", "pop", "--json", "--quiet")
    assert code == 0 and json.loads(out)["dataset"]["events"] == 5000


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["generate", "--events", "10", "--users", "100", "--output", "unused.csv"], "n_events"),
        (["compare", "--models", "pop,nope"], "--models: unknown model 'nope'"),
        (
            ["replay", "--synthetic", "3000", "--model", "pop", "--lr-multiplier", "2", "--arms", "online"],
            "--lr-multiplier: model 'pop' has no learning_rate",
        ),
    ],
)
def test_synthetic_commands_reject_bad_values(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and needle in err and len(err.strip().splitlines()) == 1


def test_sequences_file_through_evaluate_import_and_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``user item1 item2 ...`` file is detected by ``evaluate`` and ``import``; ``--format sequences``
    forces it; the replay, which needs one clock, refuses in one line."""
    folder = tmp_path / "shop"
    folder.mkdir()
    lines = [f"u{user} " + " ".join(f"i{(user + step) % 9}" for step in range(6)) for user in range(12)]
    (folder / "shop.txt").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "evaluate", "--data", str(folder), "--model", "pop", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["dataset"]["events"] == 72 and report["dataset"]["timed"] is False
    assert report["protocol"]["evaluated_users"] == 12
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--data",
        str(folder / "shop.txt"),
        "--format",
        "sequences",
        "--model",
        "pop-decay",
        "--json",
    )
    assert code == 0 and json.loads(out)["dataset"]["timed"] is False
    code, _, err = run_cli(capsys, "evaluate", "--data", str(folder), "--model", "pop", "--protocol", "temporal")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "order but no time" in err
    code, _, err = run_cli(capsys, "replay", "--data", str(folder), "--model", "pop")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "order but no time" in err
    monkeypatch.setenv("LIVEREC_EVENT_TYPES", '{"interaction": 1.0}')  # the type a sequences file's events get
    code, out, err = run_cli(capsys, "import", "--data", str(folder), "--data-dir", str(tmp_path / "engine"))
    assert code == 0, err
    assert "72 new events" in out and "order but no time" in out
