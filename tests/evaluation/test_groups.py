"""Group metrics (liverec.evaluation.groups) checked by hand on tiny examples, and ``liverec evaluate --groups``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from liverec.cli import main
from liverec.data.interactions import Histories, UserMetadata
from liverec.evaluation.groups import (
    age_bands,
    category_exposure,
    decile_exposure,
    equal_groups,
    group_report,
    group_statistics,
    largest_gap,
    list_calibration,
    popularity_deciles,
)
from liverec.evaluation.metrics import calibration_kl, category_weights

#: items 0..4 over categories (A, B): 0 = {A}, 1 = {A, B}, 2 = {B}, 3 = {} (none), 4 = {B}
CATEGORIES = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1], [0, 0], [0, 1]], dtype=np.float32))
POPULARITY = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
RANKED = np.array([[0, 1], [2, -1]])  # user 0 is shown items 0, 1; user 1 item 2 (a short list)
HISTORY = Histories.from_lists([[0, 2], [1]], users=[5, 7])


def test_category_weights_split_each_item_evenly() -> None:
    expected = np.array([[1, 0], [0.5, 0.5], [0, 1], [0, 0], [0, 1]])
    np.testing.assert_allclose(category_weights(CATEGORIES).toarray(), expected)


def test_calibration_by_hand() -> None:
    # user 0: history {0, 2} -> p = (1/2, 1/2); list {0, 1} -> q = (1.5, 0.5) / 2 = (3/4, 1/4)
    # user 1: history {1} -> p = (1/2, 1/2); list {2} -> q = (0, 1)
    alpha = 0.01
    q0 = (0.99 * 0.75 + alpha * 0.5, 0.99 * 0.25 + alpha * 0.5)
    q1 = (0.99 * 0.0 + alpha * 0.5, 0.99 * 1.0 + alpha * 0.5)
    expected = [
        0.5 * math.log(0.5 / q0[0]) + 0.5 * math.log(0.5 / q0[1]),
        0.5 * math.log(0.5 / q1[0]) + 0.5 * math.log(0.5 / q1[1]),
    ]
    np.testing.assert_allclose(list_calibration(RANKED, HISTORY, CATEGORIES, k=2), expected, rtol=1e-12)


def test_calibration_kl_edges() -> None:
    p = np.array([0.5, 0.5, 0.0])
    assert calibration_kl(p, p) == pytest.approx(0.0, abs=1e-15)
    # nothing shown in the history's categories: the bound log(1 / alpha)
    assert calibration_kl(p, np.array([0.0, 0.0, 1.0])) == pytest.approx(math.log(100))
    # broadcasting one history against several lists
    many = calibration_kl(p, np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(many, [0.0, math.log(100)], atol=1e-15)
    with pytest.raises(ValueError, match="alpha"):
        calibration_kl(p, p, alpha=0.0)


def test_calibration_is_nan_without_a_categorised_history() -> None:
    history = Histories.from_lists([[3], [0]])  # item 3 has no category
    values = list_calibration(np.array([[0], [0]]), history, CATEGORIES, k=1)
    assert math.isnan(values[0]) and values[1] == pytest.approx(0.0, abs=1e-15)


def test_category_exposure_by_hand() -> None:
    rows = category_exposure(RANKED, POPULARITY, CATEGORIES, ["A", "B"], k=2)
    # slots: items 0, 1, 2 -> A: 1 + 0.5, B: 0.5 + 1; interactions: A: 4 + 1.5, B: 1.5 + 2 (item 3: no genre)
    assert rows == [
        {"category": "A", "interaction_share": pytest.approx(5.5 / 9), "exposure_share": pytest.approx(0.5)},
        {"category": "B", "interaction_share": pytest.approx(3.5 / 9), "exposure_share": pytest.approx(0.5)},
    ]


def test_equal_groups_and_deciles() -> None:
    assert equal_groups(np.array([3, 1, 2]), 3).tolist() == [2, 0, 1]
    assert equal_groups(np.array([5, 5, 5, 5]), 2).tolist() == [0, 0, 1, 1]  # ties: by position
    assert equal_groups(np.arange(7), 5).tolist() == [0, 0, 1, 2, 2, 3, 4]  # sizes differ by at most one
    popularity = np.array([1, 9, 9, 0, 5, 5, 5, 5, 2, 3])
    # most popular first, ties by lower id: 1, 2, 4, 5, 6, 7, 9, 8, 0, 3
    assert popularity_deciles(popularity).tolist() == [8, 0, 1, 9, 2, 3, 4, 5, 7, 6]


def test_decile_exposure_by_hand() -> None:
    popularity = 20.0 - np.arange(20)  # item 0 the most popular: deciles of two items each
    ranked = np.array([[0, 1, 2], [0, 19, -1]])  # slots: 0, 1, 2, 0, 19
    rows = decile_exposure(ranked, popularity, k=3)
    assert [row["items"] for row in rows] == [2] * 10
    assert rows[0]["exposure_share"] == pytest.approx(3 / 5) and rows[0]["interaction_share"] == pytest.approx(39 / 210)
    assert rows[1]["exposure_share"] == pytest.approx(1 / 5) and rows[1]["interaction_share"] == pytest.approx(35 / 210)
    assert rows[9]["exposure_share"] == pytest.approx(1 / 5) and rows[9]["interaction_share"] == pytest.approx(3 / 210)
    assert sum(row["exposure_share"] for row in rows) == pytest.approx(1.0)
    assert sum(row["interaction_share"] for row in rows) == pytest.approx(1.0)


def test_group_statistics_and_gap_by_hand() -> None:
    values = np.array([1.0, 0.0, 0.5, 0.25, 0.0, 0.9])
    labels = np.array(["a", "a", "b", "b", "b", None], dtype=object)  # the last user has no value: left out
    stats = group_statistics(values, labels)
    # a: mean 1/2, sample sd sqrt(1/2), se 1/2; b: mean 1/4, sample sd 1/4, se 1/(4 sqrt 3)
    assert stats == [
        {"group": "a", "n": 2, "mean": pytest.approx(0.5), "se": pytest.approx(0.5)},
        {"group": "b", "n": 3, "mean": pytest.approx(0.25), "se": pytest.approx(0.25 / math.sqrt(3))},
    ]
    gap = largest_gap(stats, min_group_size=2)
    assert gap is not None
    assert (gap["high"], gap["low"]) == ("a", "b")
    assert gap["gap"] == pytest.approx(0.25)
    assert gap["se"] == pytest.approx(math.sqrt(0.5**2 + 0.0625 / 3))
    assert largest_gap(stats, min_group_size=3) is None  # only b is large enough
    single = group_statistics(np.array([0.3]), np.array(["x"], dtype=object))
    assert single == [{"group": "x", "n": 1, "mean": pytest.approx(0.3), "se": None}]


def test_age_bands() -> None:
    ages = np.array([7, 17.9, 18, 24, 25, 49, 50, 56, 73, np.nan])
    expected = ["under 18", "under 18", "18-24", "18-24", "25-34", "45-49", "50-55", "56+", "56+", None]
    assert age_bands(ages).tolist() == expected


def test_group_report_user_side_by_hand() -> None:
    history = Histories.from_lists([[0, 1, 2], [0], [0, 1], [0, 1, 2, 3, 4], [0, 1, 2, 3]], users=[0, 1, 2, 3, 4])
    ranked = np.full((5, 2), -1)
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    users = UserMetadata(
        {
            "age": np.array([20.0, 30.0, 31.0, np.nan, 22.0]),
            "gender": np.array(["F", "M", "F", "M", None], dtype=object),
        }
    )
    report = group_report(ranked, values, history, POPULARITY, 5, CATEGORIES, ["A", "B"], users, k=2)
    activity = report["users"]["activity"]["groups"]
    # lengths 3, 1, 2, 5, 4 -> quintiles Q3, Q1, Q2, Q5, Q4: one user each
    assert [(g["group"], g["n"], g["mean"], g["min_events"]) for g in activity] == [
        ("Q1", 1, 0.2, 1),
        ("Q2", 1, 0.3, 2),
        ("Q3", 1, 0.1, 3),
        ("Q4", 1, 0.5, 4),
        ("Q5", 1, 0.4, 5),
    ]
    assert report["users"]["activity"]["gap"] is None  # no group has 10 users
    age = {g["group"]: (g["n"], g["mean"]) for g in report["users"]["age"]["groups"]}
    assert age == {"18-24": (2, pytest.approx(0.3)), "25-34": (2, pytest.approx(0.25))}
    gender = {g["group"]: (g["n"], g["mean"]) for g in report["users"]["gender"]["groups"]}
    assert gender == {"F": (2, pytest.approx(0.2)), "M": (2, pytest.approx(0.3))}
    assert report["items"]["k"] == 2 and len(report["items"]["popularity_deciles"]) == 10


# ------------------------------------------------------------------------------------------- the CLI
def write_movielens(folder: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """A small MovieLens-layout folder (ratings.csv, movies.csv, users.csv) with skewed popularity."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    weights = 1.0 / np.arange(1, n_items + 1)
    lines = ["userId,movieId,rating,timestamp"]
    for user in range(1, n_users + 1):
        items = rng.choice(n_items, size=8, replace=False, p=weights / weights.sum()) + 1
        lines += [f"{user},{item},4,{1_000 * user + step}" for step, item in enumerate(items)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    genres = ["Action", "Comedy", "Drama", "Action|Comedy", "Drama|Romance"]
    movies = ["movieId,title,genres"] + [f"{i},Film {i} (1990),{genres[i % 5]}" for i in range(1, n_items + 1)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    occupations = ["student", "writer", "engineer"]
    people = ["userId,age,gender,occupation,zip"] + [
        f"{u},{15 + 3 * u % 50},{'MF'[u % 2]},{occupations[u % 3]},00000" for u in range(1, n_users + 1)
    ]
    (folder / "users.csv").write_text("\n".join(people) + "\n")
    return folder


def test_cli_groups_json_shape_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_movielens(tmp_path / "ml")
    plot = tmp_path / "exposure.png"
    code = main(["evaluate", "--data", str(data), "--model", "pop", "--groups", "--plot", str(plot), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    groups = report["groups"]
    items = groups["items"]
    assert {"gini@10", "long_tail@10", "coverage@10", "calibration_kl@10", "popularity_deciles", "categories"} <= set(
        items
    )
    assert [row["decile"] for row in items["popularity_deciles"]] == list(range(1, 11))
    assert sum(row["exposure_share"] for row in items["popularity_deciles"]) == pytest.approx(1.0)
    assert items["gini@10"] == pytest.approx(report["metrics"]["gini@10"])
    assert {row["category"] for row in items["categories"]} == {"Action", "Comedy", "Drama", "Romance"}
    users = groups["users"]
    assert users["metric"] == "ndcg@10"
    assert set(users) == {"metric", "activity", "age", "gender", "occupation"}
    assert sum(g["n"] for g in users["activity"]["groups"]) == report["evaluated_users"]
    assert {g["group"] for g in users["gender"]["groups"]} == {"F", "M"}
    gap = users["gender"]["gap"]
    assert set(gap) == {"high", "low", "gap", "se", "relative", "min_group_size"} and gap["gap"] >= 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["plot_file"] == str(plot)


def test_cli_groups_text_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_movielens(tmp_path / "ml")
    assert main(["evaluate", "--data", str(data), "--model", "pop", "--groups", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "popularity decile" in out and "calibration_kl@10" in out and "largest gap" in out
    assert "occupation" in out and "Q5" in out


def test_cli_groups_refuses_rating_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_movielens(tmp_path / "ml")
    code = main(["evaluate", "--data", str(data), "--model", "mf-mse", "--task", "rating", "--groups"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "--task ranking" in err
