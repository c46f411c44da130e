"""Loaders: every layout read from small hand-written files with exact expected rows, and every kind
of malformed input reported as one line naming the file, the line an editor shows and the column.

The real-data tests read ../shared/data/ml-100k and amazon-beauty through the ``ml100k_path`` and
``beauty_path`` fixtures of ``tests/conftest.py`` (skipped where the folder is absent, a failure in CI).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liverec.data import loaders
from liverec.data.interactions import Dataset, Histories, Interactions
from liverec.data.loaders import FORMATS, DataFormatError, describe, load_dataset

Row = tuple[str, str, float, str, float]  # (user_id, item_id, timestamp, event_type, value)


def rows(dataset: Dataset) -> list[Row]:
    """The dataset's events in file order, with external ids and event-type names."""
    inter = dataset.interactions
    users = dataset.user_map.to_external(inter.user_ids)
    items = dataset.item_map.to_external(inter.item_ids)
    types = [inter.event_type_names[code] for code in inter.event_types]
    return [
        (str(u), str(i), float(t), e, float(v))
        for u, i, t, e, v in zip(users, items, inter.timestamps, types, inter.values, strict=True)
    ]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def title_and_genres(dataset: Dataset, item_id: str) -> tuple[str | None, tuple[str, ...]]:
    assert dataset.items is not None
    row = int(dataset.item_map.to_internal([item_id])[0])
    return dataset.items.titles[row], dataset.items.genres[row]


def load_error(path: Path, **options: str) -> str:
    """The message of the DataFormatError that loading ``path`` raises; it must be one line."""
    with pytest.raises(DataFormatError) as caught:
        load_dataset(path, **options)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# --------------------------------------------------------------------------------------------------
# MovieLens layouts


def test_ml100k_from_shared_data(ml100k_path: Path) -> None:
    dataset = load_dataset(ml100k_path)
    summary = describe(dataset)
    assert dataset.name == "ml-100k"
    assert (summary["users"], summary["items"], summary["events"]) == (943, 1682, 100_000)
    assert summary["event_types"] == {"rating": 100_000}
    assert set(np.unique(dataset.interactions.values)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    title, genres = title_and_genres(dataset, "1")
    assert title == "Toy Story (1995)"
    assert "Animation" in genres
    assert dataset.items is not None and all(t is not None for t in dataset.items.titles)


def test_movielens_latest_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n007,10,3.5,100\n8,20,5,50\n007,20,0.5,200\n")
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        '10,"Heat, The (1995)",Action|Crime\n'
        "20,Toy Story (1995),Animation|Children's\n"
        "30,Never Rated (2000),(no genres listed)\n",
    )
    dataset = load_dataset(folder)
    assert dataset.name == "ml-latest-small"
    assert rows(dataset) == [
        ("007", "10", 100.0, "rating", 3.5),
        ("8", "20", 50.0, "rating", 5.0),
        ("007", "20", 200.0, "rating", 0.5),
    ]
    assert list(dataset.item_map.external_ids) == ["10", "20", "30"]  # "30" only in movies.csv
    assert title_and_genres(dataset, "10") == ("Heat, The (1995)", ("Action", "Crime"))
    assert title_and_genres(dataset, "30") == ("Never Rated (2000)", ())


def test_movielens_ratings_file_without_movies(tmp_path: Path) -> None:
    path = write(tmp_path / "my_ratings.csv", "userId,movieId,rating,timestamp\n1,2,4,10\n")
    dataset = load_dataset(path)
    assert dataset.name == "my_ratings"
    assert dataset.items is None
    assert rows(dataset) == [("1", "2", 10.0, "rating", 4.0)]


def test_ml100k_original_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n")
    no_genre = ["0"] * 19
    crime_drama = ["1" if genre in (6, 8) else "0" for genre in range(19)]
    western = ["0"] * 18 + ["1"]
    lines = [
        ["242", "Kolya (1996)", "24-Jan-1997", "", "http://us.imdb.com/M/title-exact?Kolya%20(1996)", *crime_drama],
        ["302", 'Café "Noir" (1997)', "01-Jan-1997", "", "http://x", *western],  # latin-1 é, a bare quote
        ["999", "Unrated (1998)", "01-Jan-1998", "", "", *no_genre],
    ]
    write(folder / "u.item", "".join("|".join(line) + "\n" for line in lines), encoding="latin-1")
    dataset = load_dataset(folder)
    assert rows(dataset) == [
        ("196", "242", 881250949.0, "rating", 3.0),
        ("186", "302", 891717742.0, "rating", 3.0),
        ("196", "302", 878887116.0, "rating", 1.0),
    ]
    assert dataset.item_map.size == 3  # 999 is in the catalogue without ratings
    assert title_and_genres(dataset, "242") == ("Kolya (1996)", ("Crime", "Drama"))
    assert title_and_genres(dataset, "302") == ('Café "Noir" (1997)', ("Western",))
    assert title_and_genres(dataset, "999") == ("Unrated (1998)", ())


def user_attributes(dataset: Dataset, user: str) -> dict[str, object]:
    """One user's attributes (NaN ages as None), by external id."""
    assert dataset.users is not None
    row = int(dataset.user_map.to_internal([user])[0])
    out: dict[str, object] = {}
    for name, values in dataset.users.attributes.items():
        value = values[row]
        out[name] = None if isinstance(value, float) and np.isnan(value) else value
    return out


def test_movielens_users_csv(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,100\n2,10,3,200\n3,10,5,300\n")
    # user 3 is not listed (unknown attributes), user 9 has no rating (left out), user 2's age is empty
    write(
        folder / "users.csv",
        "userId,age,gender,occupation,zip\n1,24,M,technician,85711\n2,,F,other,94043\n9,30,F,x,1\n",
    )
    dataset = load_dataset(folder)
    assert dataset.users is not None and dataset.users.names == ["age", "gender", "occupation"]  # no zip code
    assert user_attributes(dataset, "1") == {"age": 24.0, "gender": "M", "occupation": "technician"}
    assert user_attributes(dataset, "2") == {"age": None, "gender": "F", "occupation": "other"}
    assert user_attributes(dataset, "3") == {"age": None, "gender": None, "occupation": None}
    assert dataset.user_map.size == 3
    write(folder / "users.csv", "userId,age\n1,old\n")
    assert load_error(folder) == "users.csv, line 2, column 'age': expected a number (years) or nothing, got 'old'"


def test_ml100k_u_user(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    write(folder / "u.user", "186|39|F|executive|00000\n196|49|M|writer|55105\n")
    dataset = load_dataset(folder)
    assert user_attributes(dataset, "196") == {"age": 49.0, "gender": "M", "occupation": "writer"}
    assert user_attributes(dataset, "186") == {"age": 39.0, "gender": "F", "occupation": "executive"}


def test_a_source_without_user_file_has_no_user_metadata(tmp_path: Path) -> None:
    write(tmp_path / "ml" / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4,100\n")
    assert load_dataset(tmp_path / "ml").users is None


def test_ml1m_layout(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "3::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy\n",
        encoding="latin-1",
    )
    dataset = load_dataset(folder)
    assert dataset.name == "ml-1m"
    assert rows(dataset) == [
        ("1", "1193", 978300760.0, "rating", 5.0),
        ("1", "661", 978302109.0, "rating", 3.0),
        ("2", "1193", 978298413.0, "rating", 4.0),
    ]
    assert dataset.item_map.size == 4
    assert title_and_genres(dataset, "260") == ("Star Wars: Episode IV - A New Hope (1977)", ("Action", "Sci-Fi"))
    assert title_and_genres(dataset, "3")[0] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"


def test_ratings_dat_with_a_colon_in_a_field_still_loads(tmp_path: Path) -> None:
    """A stray ':' defeats the fast single-colon read; the '::' fallback must give the same rows."""
    path = write(tmp_path / "ratings.dat", "u:1::10::4::100\nu2::20::5::200\n")
    assert rows(load_dataset(path)) == [("u:1", "10", 100.0, "rating", 4.0), ("u2", "20", 200.0, "rating", 5.0)]


def test_ratings_dat_takes_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean ratings.dat is read by the C parser on ':' (ml-10m has 10M lines), not the Python engine."""

    def no_slow_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the slow '::' read was used")

    monkeypatch.setattr(loaders, "_read_text", no_slow_read)
    path = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n")
    assert len(load_dataset(path).interactions) == 2


# --------------------------------------------------------------------------------------------------
# Generic event files

FULL_ROWS: list[Row] = [
    ("007", "a", 10.0, "view", 1.0),
    ("NA", "b", 20.0, "purchase", 2.5),
    ("007", "b", 30.0, "view", 1.0),
]


def test_csv_with_every_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "shop.csv",
        "user_id,item_id,timestamp,event_type,value,extra\n007,a,10,view,1,x\nNA,b,20,purchase,2.5,y\n007,b,30,view,1,\n",
    )
    dataset = load_dataset(path)
    assert dataset.name == "shop"
    assert rows(dataset) == FULL_ROWS  # "007" keeps its zeros, "NA" is an id, not a missing value
    assert describe(dataset)["event_types"] == {"purchase": 1, "view": 2}


def test_csv_with_only_ids_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "item_id,user_id\nx,u1\ny,u2\nx,u2\n")
    assert rows(load_dataset(path)) == [
        ("u1", "x", 0.0, "interaction", 1.0),
        ("u2", "y", 1.0, "interaction", 1.0),
        ("u2", "x", 2.0, "interaction", 1.0),
    ]


def test_empty_event_type_means_the_default(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user_id,item_id,event_type\n1,2,click\n1,3,\n")
    assert [row[3] for row in rows(load_dataset(path))] == ["click", "interaction"]


def test_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "events.tsv", "user_id\titem_id\ttimestamp\n1\t2\t5\n3\t4\t6\n")
    assert rows(load_dataset(path)) == [("1", "2", 5.0, "interaction", 1.0), ("3", "4", 6.0, "interaction", 1.0)]


def test_csv_with_other_separator_and_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "orders.csv", "customer;sku;when;kind;qty\nc1;s1;100;buy;3\nc2;s1;50;view;1\n")
    dataset = load_dataset(
        path, sep=";", user_col="customer", item_col="sku", timestamp_col="when", event_type_col="kind", value_col="qty"
    )
    assert rows(dataset) == [("c1", "s1", 100.0, "buy", 3.0), ("c2", "s1", 50.0, "view", 1.0)]


def test_renamed_optional_column_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp\n1,2,3\n")
    assert load_error(path, timestamp_col="ts") == (
        "events.csv: missing column 'ts' (found columns: user_id, item_id, timestamp)"
    )


def test_iso_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        "user_id,item_id,timestamp\n"
        "1,a,2020-01-01T00:00:00Z\n"
        "1,b,2020-01-01 01:00:00\n"  # no zone: UTC
        "1,c,2020-01-01T02:00:00+02:00\n"
        "1,d,2020-01-02\n"
        "1,e,1577836800.5\n",  # numbers and dates may be mixed
    )
    assert [row[2] for row in rows(load_dataset(path))] == [
        1577836800.0,
        1577840400.0,
        1577836800.0,
        1577923200.0,
        1577836800.5,
    ]


def test_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": ["007", "NA", "007"],
            "item_id": ["a", "b", "b"],
            "timestamp": [10, 20, 30],
            "event_type": ["view", "purchase", "view"],
            "value": [1.0, 2.5, 1.0],
        }
    ).to_parquet(path)
    assert rows(load_dataset(path)) == FULL_ROWS


def test_parquet_with_integer_ids_and_datetimes(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "events.parquet"
    stamps = pd.to_datetime(["2020-01-01 00:00:00", "2020-01-01 00:00:10"])
    pd.DataFrame({"user_id": [1, 2], "item_id": [30, 40], "timestamp": stamps}).to_parquet(path)
    assert rows(load_dataset(path)) == [
        ("1", "30", 1577836800.0, "interaction", 1.0),
        ("2", "40", 1577836810.0, "interaction", 1.0),
    ]


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.jsonl",
        '{"user_id": "007", "item_id": "a", "timestamp": 10, "event_type": "view", "value": 1}\n'
        "\n"
        '{"user_id": "NA", "item_id": "b", "timestamp": "1970-01-01T00:00:20Z", "event_type": "purchase", '
        '"value": 2.5}\n'
        '{"user_id": "007", "item_id": "b", "timestamp": 30, "event_type": "view", "value": 1}\n',
    )
    assert rows(load_dataset(path)) == FULL_ROWS


def test_ndjson_with_numeric_ids_and_no_optional_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "events.ndjson", '{"user_id": 1, "item_id": 7}\n{"user_id": 2, "item_id": "x"}\n')
    assert rows(load_dataset(path)) == [("1", "7", 0.0, "interaction", 1.0), ("2", "x", 1.0, "interaction", 1.0)]


def test_compressed_events_file(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(b"user_id,item_id,value\n1,2,3\n"))
    dataset = load_dataset(path)
    assert dataset.name == "events"
    assert rows(dataset) == [("1", "2", 0.0, "interaction", 3.0)]
    path.write_bytes(gzip.compress(b"user_id,item_id,value\n1,2,3\n1,2,3,4\n"))
    assert load_error(path) == "events.csv.gz, line 3: expected 3 fields, got 4"


# --------------------------------------------------------------------------------------------------
# SASRec text, detection and format=


def test_sasrec_text_keeps_line_order(tmp_path: Path) -> None:
    path = write(tmp_path / "Beauty.txt", "1 10\n2 20\n1 12\n1  11\n2\t21\n")
    dataset = load_dataset(path)
    assert dataset.name == "Beauty"
    assert [row[:3] for row in rows(dataset)] == [
        ("1", "10", 0.0),
        ("2", "20", 1.0),
        ("1", "12", 2.0),
        ("1", "11", 3.0),
        ("2", "21", 4.0),
    ]
    histories = Histories.from_interactions(dataset.interactions)
    first_user = [str(i) for i in dataset.item_map.to_external(histories.row(0))]
    assert first_user == ["10", "12", "11"]  # the file's order, not the ids' order


def test_file_without_extension_is_sasrec(tmp_path: Path) -> None:
    path = write(tmp_path / "ml-1m", "5 6\n5 7\n")
    assert [row[:2] for row in rows(load_dataset(path))] == [("5", "6"), ("5", "7")]


def test_folder_with_one_events_file(tmp_path: Path) -> None:
    write(tmp_path / "shop" / "README.txt", "not data\n")
    write(tmp_path / "shop" / "events.csv", "user_id,item_id\n1,2\n")
    dataset = load_dataset(tmp_path / "shop")
    assert dataset.name == "shop"
    assert rows(dataset) == [("1", "2", 0.0, "interaction", 1.0)]


def test_folder_with_two_candidates_or_none(tmp_path: Path) -> None:
    write(tmp_path / "two" / "a.csv", "user_id,item_id\n1,2\n")
    write(tmp_path / "two" / "b.jsonl", '{"user_id": 1, "item_id": 2}\n')
    message = load_error(tmp_path / "two")
    assert message.startswith(
        "two: 2 candidate data files (a.csv, b.jsonl); looked for ratings.csv, u.data, ratings.dat"
    )
    (tmp_path / "empty").mkdir()
    assert load_error(tmp_path / "empty").startswith("empty: no data file found; looked for ratings.csv, u.data")


def test_format_forces_a_loader(tmp_path: Path) -> None:
    path = write(tmp_path / "export.txt", "user_id,item_id,value\n1,2,4\n")
    assert rows(load_dataset(path, format="events")) == [("1", "2", 0.0, "interaction", 4.0)]
    folder = tmp_path / "plain"
    write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4,10\n")
    assert rows(load_dataset(folder, format="movielens")) == [("1", "2", 10.0, "rating", 4.0)]
    assert (
        load_error(folder, format="ml-1m")
        == "plain: no ratings.dat (MovieLens 1M layout: UserID::MovieID::Rating::Timestamp)"
    )


def test_unknown_format_names_the_allowed_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "user_id,item_id\n1,2\n")
    with pytest.raises(ValueError, match="format: expected one of 'movielens', 'ml-100k', 'ml-1m', 'events', 'sasrec'"):
        load_dataset(path, format="netflix")
    assert FORMATS == ("movielens", "ml-100k", "ml-1m", "events", "sasrec", "sequences")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "nowhere.csv")


def test_describe(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "user_id,item_id,timestamp,event_type\n1,a,5,view\n2,a,9,buy\n1,b,7,view\n")
    assert describe(load_dataset(path)) == {
        "name": "e",
        "users": 2,
        "items": 2,
        "events": 3,
        "first_timestamp": 5.0,
        "last_timestamp": 9.0,
        "timed": True,
        "event_types": {"buy": 1, "view": 2},
    }


# --------------------------------------------------------------------------------------------------
# Sequences: ``user item1 item2 ...`` per line, order without time


def test_sequences_are_detected_and_keep_each_users_order(tmp_path: Path) -> None:
    path = write(tmp_path / "shop" / "Beauty.txt", "7 10 12 11\n\n3\t20  21\n9 12\n")
    dataset = load_dataset(tmp_path / "shop")
    assert dataset.name == "shop"
    assert [row[:3] for row in rows(dataset)] == [
        ("7", "10", 0.0),
        ("7", "12", 1.0),
        ("7", "11", 2.0),
        ("3", "20", 0.0),
        ("3", "21", 1.0),
        ("9", "12", 0.0),
    ]
    assert dataset.interactions.timed is False
    assert rows(load_dataset(path, format="sequences")) == rows(dataset)
    histories = Histories.from_interactions(dataset.interactions)
    first_user = [str(i) for i in dataset.item_map.to_external(histories.row(0))]
    assert first_user == ["10", "12", "11"]  # the line's order, not the ids' order
    assert histories.timestamps is None  # positions are no clock: nothing downstream reads them as time


def test_sequences_have_no_fake_ties_and_no_time_span(tmp_path: Path) -> None:
    """No two of a user's events share a timestamp (nothing "at the same moment"), and the dataset says it
    has no time, so nothing reads positions as seconds."""
    path = write(tmp_path / "s.txt", "1 5 5 6 7\n2 6 5\n3 7 8 9 5 6 7\n")
    inter = load_dataset(path).interactions
    ordered = inter.sorted()
    same_user = ordered.user_ids[1:] == ordered.user_ids[:-1]
    assert (np.diff(ordered.timestamps)[same_user] == 1.0).all()  # strictly increasing positions, no ties
    summary = describe(load_dataset(path))
    assert summary["timed"] is False
    assert (summary["first_timestamp"], summary["last_timestamp"]) == (None, None)
    assert (summary["users"], summary["items"], summary["events"]) == (3, 5, 12)
    # a split or a refit concatenates parts: the flag travels with every piece
    assert inter.subset(np.arange(3)).timed is False and inter.with_sizes(4, 6).timed is False
    with pytest.raises(ValueError, match="timed differs"):
        Interactions.concat([inter, Interactions.from_arrays([0], [0], n_users=3, n_items=5)])


def test_user_item_lines_stay_sasrec(tmp_path: Path) -> None:
    """Two fields per line, or users on several lines (``user item timestamp``): not sequences."""
    assert load_dataset(write(tmp_path / "pairs.txt", "1 10\n2 20\n")).interactions.timed is True
    message = load_error(write(tmp_path / "triples.txt", "1 10 100\n1 11 200\n"))
    assert message.startswith("triples.txt, line 1: expected 2 fields, got 3 (read as SASRec 'user item' lines")


def test_malformed_sequences(tmp_path: Path) -> None:
    hint = "(read as 'user item1 item2 ...' sequences; pass format= to choose another loader)"
    path = write(tmp_path / "a.txt", "1 2 3\n\n4\n")
    assert load_error(path) == f"a.txt, line 3: expected a user followed by at least one item, got 1 field '4' {hint}"
    path = write(tmp_path / "b.txt", "1 2 3\n2 4 5\n1 6 7\n")
    assert load_error(path, format="sequences") == (
        f"b.txt, line 3: user '1' already has line 1; expected one line per user {hint}"
    )
    path = write(tmp_path / "c.csv", "1,2,3\n2,,5\n")
    assert load_error(path, format="sequences", sep=",") == (
        "c.csv, line 2, item 1: expected a non-empty id, got an empty field"
    )
    assert load_error(write(tmp_path / "d.txt", "\n\n"), format="sequences") == (
        "d.txt: the file is empty (expected lines of a user followed by at least one item)"
    )


def test_compressed_sequences(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("1 2 3 4\n2 3 4\n")
    dataset = load_dataset(path)
    assert dataset.name == "Beauty" and dataset.interactions.timed is False
    assert [row[:3] for row in rows(dataset)][:3] == [("1", "2", 0.0), ("1", "3", 1.0), ("1", "4", 2.0)]


def test_amazon_beauty_from_shared_data(beauty_path: Path) -> None:
    dataset = load_dataset(beauty_path)
    summary = describe(dataset)
    assert (summary["users"], summary["items"], summary["events"]) == (22_363, 12_101, 198_502)
    assert summary["timed"] is False
    histories = Histories.from_interactions(dataset.interactions)
    assert [str(i) for i in dataset.item_map.to_external(histories.row(0))] == ["1", "2", "3", "4", "5"]
    assert [str(i) for i in dataset.item_map.to_external(histories.row(1))] == ["6", "7", "8", "9", "10", "4", "11"]
    assert int(np.median(histories.lengths())) == 6 and histories.lengths().min() >= 5


# --------------------------------------------------------------------------------------------------
# Malformed input: one line naming the file, the editor's line number and the column


def test_extra_field_reports_the_editors_line(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3,5\n1,4,3,6,99\n1,5,3,7\n")
    assert load_error(path) == "ratings.csv, line 4: expected 4 fields, got 5"


def test_extra_field_on_the_first_data_line(tmp_path: Path) -> None:
    """pandas would silently take the extra first column as an index; it must be an error instead."""
    path = write(tmp_path / "events.csv", "user_id,item_id\n1,2,3\n4,5\n")
    assert load_error(path) == "events.csv, line 2: expected 2 fields, got 3"


def test_line_numbers_count_blank_lines_and_multiline_quotes(tmp_path: Path) -> None:
    """pandas counts a record with a quoted line break as one line; an editor shows two."""
    path = write(tmp_path / "events.csv", 'user_id,item_id,title\n\n1,2,"two\nlines"\n3,4,x\n5,6,y,z\n')
    assert load_error(path) == "events.csv, line 6: expected 3 fields, got 4"


def test_short_line_reports_its_field_count(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3\n")
    assert load_error(path) == "ratings.csv, line 3: expected 4 fields, got 3"


def test_bad_line_in_headerless_layouts(tmp_path: Path) -> None:
    write(tmp_path / "100k" / "u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n")
    assert load_error(tmp_path / "100k") == "u.data, line 2: expected 4 fields, got 5"
    write(tmp_path / "1m" / "ratings.dat", "1::2::3::4\n1::2::3::4\n1::2::3\n")
    assert load_error(tmp_path / "1m") == "ratings.dat, line 3: expected 4 fields, got 3"
    message = load_error(write(tmp_path / "seq.txt", "1 2\n1 3 4\n"))
    assert message.startswith("seq.txt, line 2: expected 2 fields, got 3 (read as SASRec 'user item' lines")


def test_quoted_field_never_closed(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", 'user_id,item_id\n1,2\n3,"4\n5,6\n')
    assert load_error(path) == "events.csv, line 3: a quoted field opens here and is never closed"


def test_bad_genre_flag_in_u_item(tmp_path: Path) -> None:
    write(tmp_path / "ml" / "u.data", "1\t2\t3\t4\n")
    write(tmp_path / "ml" / "u.item", "2|Title|||" + "|0" * 18 + "|yes\n")
    assert load_error(tmp_path / "ml") == "u.item, line 1, column 'Western': expected 0 or 1, got 'yes'"


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user,foo\n1,2\n")
    assert load_error(path, user_col="user") == "events.csv: missing column 'item_id' (found columns: user, foo)"


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3,5\n1,4,3,6\n1,5,3,abc\n")
    assert load_error(path) == (
        "ratings.csv, line 5, column 'timestamp': expected a number or an ISO-8601 date, got 'abc'"
    )


def test_non_numeric_rating_and_empty_id(tmp_path: Path) -> None:
    ratings = write(tmp_path / "r" / "u.data", "1\t2\t3\t4\n1\t2\tfive\t4\n")
    assert load_error(ratings.parent) == "u.data, line 2, column 'rating': expected a number, got 'five'"
    events = write(tmp_path / "events.csv", "user_id,item_id\n1,2\n,3\n")
    assert load_error(events) == "events.csv, line 3, column 'user_id': expected a non-empty id, got an empty field"


def test_the_earliest_bad_line_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user_id,item_id,timestamp,value\n1,2,3,x\n1,2,later,1\n")
    assert load_error(path) == "events.csv, line 2, column 'value': expected a number, got 'x'"


def test_bad_json_line(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", '{"user_id": 1, "item_id": 2}\n\n{"user_id": 1, item_id: 3}\n')
    message = load_error(path)
    assert message.startswith("events.jsonl, line 3: expected a JSON object, got invalid JSON")
    not_object = write(tmp_path / "list.jsonl", '{"user_id": 1, "item_id": 2}\n[1, 2]\n')
    assert load_error(not_object) == "list.jsonl, line 2: expected a JSON object, got '[1, 2]'"


def test_bad_value_in_json_line(tmp_path: Path) -> None:
    first = '{"user_id": 1, "item_id": 2, "timestamp": 3, "value": 1}\n\n'
    path = write(tmp_path / "e.jsonl", first + '{"user_id": 1, "item_id": 2, "timestamp": "soon", "value": 1}\n')
    assert load_error(path) == "e.jsonl, line 3, column 'timestamp': expected a number or an ISO-8601 date, got 'soon'"
    no_value = write(tmp_path / "v.jsonl", first + '{"user_id": 1, "item_id": 2, "timestamp": 4}\n')
    assert load_error(no_value) == "v.jsonl, line 3, column 'value': expected a number, got an empty field"


def test_bad_value_in_parquet_names_the_row_index(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "e.parquet"
    pd.DataFrame({"user_id": ["1", "2", "3"], "item_id": ["a", "b", "c"], "timestamp": ["1", "2", "x"]}).to_parquet(
        path
    )
    assert (
        load_error(path) == "e.parquet, row index 2, column 'timestamp': expected a number or an ISO-8601 date, got 'x'"
    )


def test_empty_files(tmp_path: Path) -> None:
    assert load_error(write(tmp_path / "empty.csv", "")) == "empty.csv: the file is empty (no data rows)"
    assert load_error(write(tmp_path / "blank.csv", "\n\n")) == "blank.csv: the file is empty (no data rows)"
    header_only = write(tmp_path / "header.csv", "user_id,item_id\n")
    assert load_error(header_only) == "header.csv: no data rows (only a header line)"
    assert load_error(write(tmp_path / "empty.jsonl", "\n")) == "empty.jsonl: the file is empty (no JSON lines)"
    assert load_error(write(tmp_path / "empty.txt", "")) == "empty.txt: the file is empty (no data rows)"
