"""Loaders: interaction data on disk in, a :class:`~liverec.data.interactions.Dataset` out.

One entry point, :func:`load_dataset`, reads the layouts people actually have on disk: MovieLens in
its three shapes ("ml-latest" CSV, ml-100k ``u.data``, ml-1m ``ratings.dat``), generic event files
(CSV, TSV, Parquet, JSON lines), the SASRec ``user item`` text files and the ``user item1 item2 ...``
sequence files of the sequential-recommendation literature (Amazon Beauty as S3Rec/ICLRec ship it). It
recognises the layout from what it finds, or takes ``format=`` to force one.

Mistakes in the data are reported as :class:`DataFormatError`, one line a person can act on: the
file, where in it (the line as a text editor counts it, the header being line 1; a row index for
Parquet), the column, the value found and what was expected.

How it stays fast: each file is read by one vectorised pandas call and checked with vectorised
masks. Only when a check fails is the file read again, in Python, to find the editor line of the
offending row. That scan mirrors the dialect pandas was given (separator, quoting, blank lines) and
counts physical lines itself, because pandas' own "line N" counts records, not lines, once a quoted
field spans lines.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn, TypedDict

import numpy as np
import pandas as pd

from liverec.data.interactions import DEFAULT_EVENT_TYPE, Dataset
from liverec.errors import DataFormatError, UsageError

__all__ = ["FORMATS", "DataFormatError", "DatasetSummary", "describe", "load_dataset", "load_source"]

#: Event type of every row of a MovieLens file (the value is the star rating).
RATING_EVENT_TYPE = "rating"

#: The 19 genre flags of ml-100k's ``u.item``, in file order.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

#: What MovieLens writes in the genres field of a movie that has none.
NO_GENRES = "(no genres listed)"

#: Generic event-file extensions and their default separator (None: not a delimited text file).
_EVENT_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".parquet": None, ".jsonl": None, ".ndjson": None}
#: Compressed files are read through: suffix -> (pandas' compression name, opener of the error-path scan).
_COMPRESSIONS: dict[str, tuple[str, Callable[..., IO[str]]]] = {
    ".gz": ("gzip", gzip.open),
    ".bz2": ("bz2", bz2.open),
    ".xz": ("xz", lzma.open),
}
#: Files in a folder that are never data, whatever their extension.
_NOT_DATA = re.compile(r"^(readme|licen[cs]e|changelog|notice)\b", re.IGNORECASE)

_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_PANDAS_BAD_LINE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_TIMESTAMP_EXPECTED = "a number or an ISO-8601 date"


class DatasetSummary(TypedDict):
    """What :func:`describe` reports about a dataset."""

    name: str
    users: int
    items: int
    events: int
    first_timestamp: float | None
    last_timestamp: float | None
    timed: bool
    event_types: dict[str, int]


@dataclass(frozen=True)
class _Options:
    """The column-name and separator options of :func:`load_dataset` (generic event files only)."""

    user_col: str = "user_id"
    item_col: str = "item_id"
    timestamp_col: str = "timestamp"
    event_type_col: str = "event_type"
    value_col: str = "value"
    sep: str | None = None


_DEFAULTS = _Options()


def load_dataset(
    path: str | Path,
    *,
    format: str | None = None,
    user_col: str = "user_id",
    item_col: str = "item_id",
    timestamp_col: str = "timestamp",
    event_type_col: str = "event_type",
    value_col: str = "value",
    sep: str | None = None,
) -> Dataset:
    """Read interactions (and item titles/genres where the source has them) from ``path``.

    ``path`` is a folder or a file; the layout is recognised from what is there:

    - a folder with ``ratings.csv`` (+ ``movies.csv``): MovieLens "ml-latest" (ml-latest-small,
      ml-25m, ...); a ``.csv`` file whose header has ``userId`` and ``movieId`` is read the same way;
    - a folder with ``u.data`` (+ ``u.item``): MovieLens 100K as GroupLens ships it;
    - a folder with ``ratings.dat`` (+ ``movies.dat``): MovieLens 1M (and 10M);
    - a ``.csv``, ``.tsv``, ``.parquet``, ``.jsonl`` or ``.ndjson`` file of events with columns
      ``user_id, item_id[, timestamp][, event_type][, value]`` (other names via the ``*_col`` options);
    - a ``.txt`` file, or one with an extension not listed here: SASRec ``user item`` lines, oldest
      first per user; or, when a line among the first 100 has more than two fields and no user starts
      two of them, one line per user, ``user item1 item2 ... itemN``, oldest first (format
      ``sequences``; a user on a second line is then an error): order without time,
      so the dataset's interactions are marked ``timed=False`` and their timestamps are positions in
      each user's sequence (see :class:`~liverec.data.interactions.Interactions`);
    - a folder with exactly one file of those kinds (README and licence files are ignored).

    ``format`` forces a loader: one of :data:`FORMATS`. For event files a missing ``timestamp``
    column means row order (0, 1, 2, ... seconds), a missing ``event_type`` column means
    ``"interaction"`` and a missing ``value`` column means 1.0; an optional column renamed through
    its option must exist. Where a column is present every row must fill it (an empty event type
    alone falls back to ``"interaction"``). Timestamps are Unix seconds or ISO-8601 dates (UTC
    unless a zone is given). MovieLens rows get event type ``"rating"`` with the rating as value.
    Ids are kept as written ("007" stays "007"). ``sep`` overrides the separator of CSV/TSV event
    files, SASRec files and sequences files; the ``*_col`` options and ``sep`` do not apply to the
    MovieLens layouts. Items that appear only in a metadata file are part of the catalogue. Text files may
    be compressed (``.gz``, ``.bz2``, ``.xz``). The dataset is named after the folder, or the
    file's stem.

    Raises :class:`DataFormatError` (one line: file, line, column, value, expectation) for data that
    does not fit, ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` for an
    unknown ``format``.
    """
    path = Path(path)
    if format is not None and format not in _LOADERS:
        raise ValueError(f"format: expected one of {', '.join(map(repr, FORMATS))} or None, got {format!r}")
    if not path.exists():
        raise FileNotFoundError(f"path: {str(path)!r} does not exist")
    options = _Options(user_col, item_col, timestamp_col, event_type_col, value_col, sep)
    chosen = format if format is not None else _detect_format(path, options)
    return _LOADERS[chosen](path, options)


def describe(dataset: Dataset) -> DatasetSummary:
    """Counts a person checks first after loading: users, items, events, time span, event types.

    A dataset with order but no time (``timed`` False) has no time span: its timestamps are positions.
    """
    interactions = dataset.interactions
    names = interactions.event_type_names
    per_type = np.bincount(interactions.event_types, minlength=len(names)) if len(interactions) else np.zeros(0)
    has_events = len(interactions) > 0 and interactions.timed
    return DatasetSummary(
        name=dataset.name,
        users=dataset.user_map.size,
        items=dataset.item_map.size,
        events=len(interactions),
        first_timestamp=float(interactions.timestamps.min()) if has_events else None,
        last_timestamp=float(interactions.timestamps.max()) if has_events else None,
        timed=interactions.timed,
        event_types={name: int(count) for name, count in zip(names, per_type, strict=False) if count},
    )


# --------------------------------------------------------------------------------------------------
# Layout detection


def _detect_format(path: Path, options: _Options) -> str:
    """The loader for ``path``, from the files a folder holds or a file's name and header."""
    if path.is_dir():
        for file_name, format_name in (("ratings.csv", "movielens"), ("u.data", "ml-100k"), ("ratings.dat", "ml-1m")):
            if (path / file_name).is_file():
                return format_name
        return _format_of_file(_single_data_file(path), options)
    return _format_of_file(path, options)


def _format_of_file(path: Path, options: _Options) -> str:
    if path.name == "u.data":
        return "ml-100k"
    if path.name == "ratings.dat":
        return "ml-1m"
    suffix = _data_suffix(path)
    if suffix == ".csv":
        header = _header_fields(path)
        if "userId" in header and "movieId" in header and options.user_col not in header:
            return "movielens"
    if suffix in _EVENT_SUFFIXES:
        return "events"
    return "sequences" if _looks_like_sequences(path, options.sep) else "sasrec"


#: How many non-blank lines layout detection reads to tell ``user item`` lines from sequences.
_DETECTION_LINES = 100


def _looks_like_sequences(path: Path, sep: str | None) -> bool:
    """Whether the first non-blank lines read as ``user item1 item2 ...``: some line has more than two
    fields and no user starts two lines (``user item`` files repeat users; so do ``user item time`` ones)."""
    users: set[str] = set()
    long_line = False
    try:
        with _open_text(path, encoding="utf-8-sig") as handle:
            for line in handle:
                fields = _split_fields(line, sep)
                if not fields:
                    continue
                if fields[0] in users:
                    return False
                users.add(fields[0])
                long_line = long_line or len(fields) > 2
                if len(users) >= _DETECTION_LINES:
                    break
    except (OSError, EOFError):
        return False  # the loader reading it says what is wrong
    return long_line


def _split_fields(line: str, sep: str | None) -> list[str]:
    """A text line's fields: runs of whitespace (``sep`` None) or ``sep``; [] for a blank line."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return []
    return text.split() if sep is None else [field.strip() for field in text.split(sep)]


def _header_fields(path: Path) -> list[str]:
    """The first line of a CSV file split into fields ([] when unreadable)."""
    try:
        with _open_text(path, encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except (OSError, EOFError):
        return []


def _single_data_file(folder: Path) -> Path:
    """The one recognised data file in ``folder``, or a DataFormatError saying what was looked for."""
    known = (*_EVENT_SUFFIXES, ".txt")
    found = sorted(
        child
        for child in folder.iterdir()
        if child.is_file()
        and _data_suffix(child) in known
        and not child.name.startswith(".")
        and not _NOT_DATA.match(child.name)
    )
    if len(found) == 1:
        return found[0]
    looked_for = "ratings.csv, u.data, ratings.dat or exactly one events file (" + ", ".join(known) + ")"
    if not found:
        raise DataFormatError(f"{folder.name}: no data file found; looked for {looked_for}")
    names = ", ".join(child.name for child in found)
    raise DataFormatError(
        f"{folder.name}: {len(found)} candidate data files ({names}); looked for {looked_for}; pass one file as path"
    )


def _layout_file(path: Path, file_name: str, description: str) -> Path:
    """``path`` itself, or ``path / file_name`` when ``path`` is a folder (which must hold it)."""
    if not path.is_dir():
        return path
    if not (path / file_name).is_file():
        raise DataFormatError(f"{path.name}: no {file_name} ({description})")
    return path / file_name


def _dataset_name(path: Path) -> str:
    """The folder's name, or the file's name without its extension (and compression suffix)."""
    if path.is_dir():
        return path.name
    return Path(path.stem).stem if path.suffix.lower() in _COMPRESSIONS else path.stem


def _data_suffix(path: Path) -> str:
    """The extension that says what a file holds: ``.csv`` for ``events.csv`` and ``events.csv.gz``."""
    suffix = path.suffix.lower()
    return Path(path.stem).suffix.lower() if suffix in _COMPRESSIONS else suffix


def _compression(path: Path) -> str | None:
    """pandas' name for the compression of ``path``; only the ones the error-path scan can open too."""
    entry = _COMPRESSIONS.get(path.suffix.lower())
    return entry[0] if entry is not None else None


def _open_text(path: Path, encoding: str, newline: str | None = None) -> IO[str]:
    """``path`` opened as text, decompressed where its suffix says so; undecodable bytes are replaced."""
    entry = _COMPRESSIONS.get(path.suffix.lower())
    if entry is not None:
        return entry[1](path, "rt", encoding=encoding, errors="replace", newline=newline)
    return path.open(encoding=encoding, errors="replace", newline=newline)


# --------------------------------------------------------------------------------------------------
# Loaders (one per format, registered in _LOADERS)


def _load_movielens(path: Path, options: _Options) -> Dataset:
    """MovieLens "ml-latest" layout: ``ratings.csv`` (userId,movieId,rating,timestamp) + ``movies.csv``."""
    ratings_path = _layout_file(path, "ratings.csv", "MovieLens 'ml-latest' layout: userId,movieId,rating,timestamp")
    table = _read_text(_TextLayout(ratings_path, sep=","), str_columns=("userId", "movieId"))
    _require_columns(table, ("userId", "movieId", "rating", "timestamp"))
    frame = _events_frame(
        table,
        user="userId",
        item="movieId",
        timestamp="timestamp",
        value="rating",
        default_event_type=RATING_EVENT_TYPE,
    )
    movies_path = ratings_path.parent / "movies.csv"
    items = _read_movies_csv(movies_path) if movies_path.is_file() else None
    users_path = ratings_path.parent / "users.csv"
    users = _read_users_csv(users_path) if users_path.is_file() else None
    return Dataset.from_frame(frame, name=_dataset_name(path), items=items, users=users)


def _load_ml100k(path: Path, options: _Options) -> Dataset:
    """MovieLens 100K as shipped: ``u.data`` (tab-separated, no header) + ``u.item`` (``|``, latin-1)."""
    data_path = _layout_file(path, "u.data", "MovieLens 100K layout: tab-separated user item rating timestamp")
    layout = _TextLayout(data_path, sep="\t", names=("user", "item", "rating", "timestamp"), quoted=False)
    table = _read_text(layout, str_columns=("user", "item"))
    frame = _events_frame(
        table, user="user", item="item", timestamp="timestamp", value="rating", default_event_type=RATING_EVENT_TYPE
    )
    item_path = data_path.parent / "u.item"
    items = _read_u_item(item_path) if item_path.is_file() else None
    user_path = data_path.parent / "u.user"
    users = _read_u_user(user_path) if user_path.is_file() else None
    return Dataset.from_frame(frame, name=_dataset_name(path), items=items, users=users)


def _load_ml1m(path: Path, options: _Options) -> Dataset:
    """MovieLens 1M/10M: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) + ``movies.dat``."""
    data_path = _layout_file(path, "ratings.dat", "MovieLens 1M layout: UserID::MovieID::Rating::Timestamp")
    table = _read_double_colon(data_path, ("UserID", "MovieID", "Rating", "Timestamp"))
    frame = _events_frame(
        table,
        user="UserID",
        item="MovieID",
        timestamp="Timestamp",
        value="Rating",
        default_event_type=RATING_EVENT_TYPE,
    )
    movies_path = data_path.parent / "movies.dat"
    items = _read_movies_dat(movies_path) if movies_path.is_file() else None
    return Dataset.from_frame(frame, name=_dataset_name(path), items=items)


def _load_events(path: Path, options: _Options) -> Dataset:
    """A generic events file: CSV/TSV/Parquet/JSON lines with user, item and optional columns."""
    file_path = _single_data_file(path) if path.is_dir() else path
    suffix = _data_suffix(file_path)
    if suffix == ".parquet":
        table = _read_parquet(file_path)
    elif suffix in (".jsonl", ".ndjson"):
        table = _read_jsonl(file_path)
    else:
        sep = options.sep if options.sep is not None else _EVENT_SUFFIXES.get(suffix) or ","
        layout = _TextLayout(file_path, sep=sep)
        table = _read_text(layout, str_columns=(options.user_col, options.item_col, options.event_type_col))
    _require_columns(table, (options.user_col, options.item_col))
    frame = _events_frame(
        table,
        user=options.user_col,
        item=options.item_col,
        timestamp=_optional_column(table, options.timestamp_col, _DEFAULTS.timestamp_col),
        value=_optional_column(table, options.value_col, _DEFAULTS.value_col),
        event_type=_optional_column(table, options.event_type_col, _DEFAULTS.event_type_col),
        default_event_type=DEFAULT_EVENT_TYPE,
    )
    return Dataset.from_frame(frame, name=_dataset_name(path))


def _load_sasrec(path: Path, options: _Options) -> Dataset:
    """SASRec text: ``user item`` per line, chronological per user; the line order is the clock."""
    file_path = _single_data_file(path) if path.is_dir() else path
    layout = _TextLayout(
        file_path,
        sep=options.sep,
        names=("user", "item"),
        quoted=False,
        hint="read as SASRec 'user item' lines; pass format= to choose another loader",
    )
    table = _read_text(layout, str_columns=("user", "item"))
    frame = _events_frame(table, user="user", item="item", default_event_type=DEFAULT_EVENT_TYPE)
    return Dataset.from_frame(frame, name=_dataset_name(path))


_SEQUENCES_HINT = "read as 'user item1 item2 ...' sequences; pass format= to choose another loader"


def _load_sequences(path: Path, options: _Options) -> Dataset:
    """One line per user: ``user item1 item2 ... itemN``, oldest first, no time (the S3Rec/ICLRec layout).

    Order without time: each event's timestamp is its position in its user's sequence (0, 1, 2, ...)
    and the interactions are marked ``timed=False``, so no step reads those positions as seconds
    (nothing is "a second apart") and no two of a user's events share a timestamp (nothing is "at
    the same moment"). A user on two lines is an error: the layout has one line per user.
    """
    file_path = _single_data_file(path) if path.is_dir() else path
    users: list[str] = []
    items: list[str] = []
    lengths: list[int] = []
    first_line: dict[str, int] = {}
    expected = "a user followed by at least one item"
    try:
        with _open_text(file_path, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                fields = _split_fields(line, options.sep)
                if not fields:
                    continue
                if len(fields) < 2:
                    raise DataFormatError(
                        f"{file_path.name}, line {number}: expected {expected}, got 1 field "
                        f"{_shorten(fields[0])!r} ({_SEQUENCES_HINT})"
                    )
                if "" in fields:
                    column = fields.index("")
                    what = "user" if column == 0 else f"item {column}"
                    raise DataFormatError(
                        f"{file_path.name}, line {number}, {what}: expected a non-empty id, got an empty field"
                    )
                user = fields[0]
                if user in first_line:
                    raise DataFormatError(
                        f"{file_path.name}, line {number}: user {_shorten(user)!r} already has line "
                        f"{first_line[user]}; expected one line per user ({_SEQUENCES_HINT})"
                    )
                first_line[user] = number
                users.append(user)
                items.extend(fields[1:])
                lengths.append(len(fields) - 1)
    except UnicodeDecodeError as error:
        raise _undecodable(file_path.name, "utf-8", error) from None
    except (OSError, EOFError) as error:
        raise _unreadable(file_path.name, error) from None
    if not users:
        raise DataFormatError(f"{file_path.name}: the file is empty (expected lines of {expected})")
    counts = np.asarray(lengths, dtype=np.int64)
    user_column = np.repeat(np.asarray(users, dtype=object), counts)
    item_column = np.asarray(items, dtype=object)
    timestamps = (np.arange(len(item_column)) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.float64)
    event_types = np.empty(len(item_column), dtype=object)
    event_types.fill(DEFAULT_EVENT_TYPE)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(user_column, dtype=object, copy=False),
            "item_id": pd.Series(item_column, dtype=object, copy=False),
            "timestamp": pd.Series(timestamps, copy=False),
            "event_type": pd.Series(event_types, dtype=object, copy=False),
            "value": pd.Series(np.ones(len(item_column)), copy=False),
        },
        copy=False,
    )
    return Dataset.from_frame(frame, name=_dataset_name(path), timed=False)


_LOADERS: dict[str, Callable[[Path, _Options], Dataset]] = {
    "movielens": _load_movielens,
    "ml-100k": _load_ml100k,
    "ml-1m": _load_ml1m,
    "events": _load_events,
    "sasrec": _load_sasrec,
    "sequences": _load_sequences,
}

#: The names ``load_dataset(format=...)`` accepts.
FORMATS: tuple[str, ...] = tuple(_LOADERS)


# --------------------------------------------------------------------------------------------------
# Item metadata


def _read_movies_csv(path: Path) -> pd.DataFrame:
    """``movies.csv``: movieId,title,genres with genres ``|``-joined."""
    table = _read_text(
        _TextLayout(path, sep=",", encoding=_text_encoding(path)), str_columns=("movieId", "title", "genres")
    )
    _require_columns(table, ("movieId", "title"))
    genres = _split_genres(table.frame["genres"] if "genres" in table.frame.columns else None, len(table.frame))
    return _items_frame(table, id_column="movieId", title_column="title", genres=genres)


def _read_movies_dat(path: Path) -> pd.DataFrame:
    """``movies.dat``: ``MovieID::Title::Genres``, latin-1 in ml-1m, genres ``|``-joined."""
    table = _read_double_colon(path, ("MovieID", "Title", "Genres"), encoding=_text_encoding(path))
    return _items_frame(
        table, id_column="MovieID", title_column="Title", genres=_split_genres(table.frame["Genres"], len(table.frame))
    )


def _read_u_item(path: Path) -> pd.DataFrame:
    """``u.item``: ``id|title|release date|video release date|IMDb URL|`` then 19 0/1 genre flags."""
    names = ("movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES)
    layout = _TextLayout(path, sep="|", names=names, quoted=False, encoding=_text_encoding(path))
    table = _read_text(layout, str_columns=names[:5])
    flags = np.zeros((len(table.frame), len(ML100K_GENRES)), dtype=bool)
    checks = []
    for position, genre in enumerate(ML100K_GENRES):
        numbers, bad = _numbers(table.frame[genre])
        checks.append(_Check(genre, bad | ~np.isin(numbers, (0.0, 1.0)), "0 or 1"))
        flags[:, position] = numbers == 1.0
    _raise_first_problem(table, checks)
    genres = [tuple(g for g, flag in zip(ML100K_GENRES, row, strict=True) if flag) for row in flags]
    return _items_frame(table, id_column="movie id", title_column="movie title", genres=genres)


# --------------------------------------------------------------------------------------------------
# User metadata

#: The user attributes read from MovieLens user files (the zip code is left out: a place, not a group).
USER_ATTRIBUTES: tuple[str, ...] = ("age", "gender", "occupation")


def _read_users_csv(path: Path) -> pd.DataFrame:
    """``users.csv`` beside an "ml-latest"-layout ``ratings.csv``: userId[,age][,gender][,occupation][,...]."""
    table = _read_text(_TextLayout(path, sep=","), str_columns=("userId", "gender", "occupation", "zip"))
    _require_columns(table, ("userId",))
    return _users_frame(table, id_column="userId", columns={name: name for name in USER_ATTRIBUTES})


def _read_u_user(path: Path) -> pd.DataFrame:
    """ml-100k ``u.user``: ``user id|age|gender|occupation|zip code``, no header."""
    names = ("user id", "age", "gender", "occupation", "zip code")
    layout = _TextLayout(path, sep="|", names=names, quoted=False, encoding=_text_encoding(path))
    table = _read_text(layout, str_columns=("user id", "gender", "occupation", "zip code"))
    return _users_frame(table, id_column="user id", columns={name: name for name in USER_ATTRIBUTES})


def _users_frame(table: _Table, id_column: str, columns: dict[str, str]) -> pd.DataFrame:
    """The ``users`` frame of :meth:`Dataset.from_frame`: user_id, then ``age`` (a number, NaN when empty) and
    the text attributes (None when empty) that the file has; ``columns`` maps attribute -> file column."""
    user_ids, bad_ids = _id_strings(table.frame[id_column])
    checks = [_Check(id_column, bad_ids, "a non-empty id")]
    frame = pd.DataFrame({"user_id": pd.Series(user_ids, dtype=object)})
    for attribute, column in columns.items():
        if column not in table.frame.columns:
            continue
        values = table.frame[column]
        if attribute == "age":
            numbers, bad = _numbers(values)
            checks.append(_Check(column, bad & values.notna().to_numpy(), "a number (years) or nothing"))
            frame[attribute] = numbers
        else:
            text = values.astype(object)
            frame[attribute] = pd.Series(text.where(text.notna(), None).to_numpy(dtype=object), dtype=object)
    _raise_first_problem(table, checks)
    return frame


def _split_genres(column: pd.Series | None, n_rows: int) -> list[tuple[str, ...]]:
    """``Action|Comedy`` -> ("Action", "Comedy"); empty or "(no genres listed)" -> ()."""
    if column is None:
        return [()] * n_rows
    texts = column.fillna("").astype(str).tolist()
    return [tuple(g for g in text.split("|") if g and g != NO_GENRES) for text in texts]


def _items_frame(table: _Table, id_column: str, title_column: str, genres: list[tuple[str, ...]]) -> pd.DataFrame:
    """The ``items`` frame of :meth:`Dataset.from_frame`: item_id, title (str or None), genres."""
    item_ids, bad_ids = _id_strings(table.frame[id_column])
    _raise_first_problem(table, [_Check(id_column, bad_ids, "a non-empty id")])
    titles = table.frame[title_column].astype(object)
    titles = titles.where(titles.notna(), None)
    return pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype=object),
            "title": pd.Series(titles.to_numpy(dtype=object), dtype=object),
            "genres": pd.Series(genres, dtype=object),
        }
    )


def _text_encoding(path: Path) -> str:
    """UTF-8 when the whole (small, metadata) file decodes as such, else latin-1 as GroupLens wrote it."""
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8-sig"


# --------------------------------------------------------------------------------------------------
# Reading files into tables


@dataclass(frozen=True)
class _Table:
    """A raw table read from one file, and a way to say where one of its rows is in that file."""

    frame: pd.DataFrame
    file_name: str
    locate: Callable[[int], str]  # data-row position -> "line 5" / "row index 5"; may raise DataFormatError


@dataclass(frozen=True)
class _TextLayout:
    """How a delimited text file is written. pandas is told this, and the error-path scan mirrors it."""

    path: Path
    sep: str | None  # None: runs of whitespace
    names: tuple[str, ...] | None = None  # column names of a file without a header line
    quoted: bool = True  # '"' quotes fields (CSV dialect); False: the separator always splits
    encoding: str = "utf-8-sig"  # utf-8, ignoring the byte-order mark spreadsheet exports write
    hint: str = ""  # appended to field-count errors, in brackets

    @property
    def file_name(self) -> str:
        return self.path.name


def _read_text(layout: _TextLayout, str_columns: tuple[str, ...]) -> _Table:
    """One vectorised pandas read; ``str_columns`` stay text ("007" stays "007"), others are inferred.

    Only the empty field counts as missing (a user called "NA" keeps that id). A line with more
    fields than the header, or a first data line that would silently turn into an index, becomes a
    field-count DataFormatError with the line an editor shows.
    """
    multi_char = layout.sep is not None and len(layout.sep) > 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # "Length of header ... does not match"
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed chunks: bad values are checked below
            frame = pd.read_csv(
                layout.path,
                sep=r"\s+" if layout.sep is None else layout.sep,
                header=0 if layout.names is None else None,
                names=None if layout.names is None else list(layout.names),
                dtype=dict.fromkeys(str_columns, object),
                keep_default_na=False,
                na_values=[""],
                index_col=False,
                quoting=csv.QUOTE_MINIMAL if layout.quoted else csv.QUOTE_NONE,
                encoding=layout.encoding,
                compression=_compression(layout.path),
                engine="python" if multi_char else "c",
            )
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{layout.file_name}: the file is empty (no data rows)") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        _raise_field_count(layout, str(error))
    except UnicodeDecodeError as error:
        raise _undecodable(layout.file_name, layout.encoding, error) from None
    except (OSError, EOFError) as error:  # e.g. a truncated .gz
        raise _unreadable(layout.file_name, error) from None
    if len(frame) == 0:
        what = "no data rows (only a header line)" if layout.names is None else "the file is empty (no data rows)"
        raise DataFormatError(f"{layout.file_name}: {what}")
    if layout.names is None:  # keep the header as written; pandas would only mangle duplicates
        frame.columns = [str(c) for c in frame.columns]
    return _Table(frame, layout.file_name, lambda row: _line_of_row(layout, row))


def _read_double_colon(path: Path, names: tuple[str, ...], encoding: str = "utf-8-sig") -> _Table:
    """A ``::``-separated file. Fast path: the C parser on ``:``, keeping every other field.

    pandas only parses multi-character separators with its (slow) Python engine, so ``a::b`` is
    read as ``a``, ``""``, ``b`` by the C parser; when that does not come out clean (a stray ``:``
    inside a field, a bad line) the file is read again with the Python engine, whose errors are
    then reported with their line.
    """
    layout = _TextLayout(path, sep="::", names=names, quoted=False, encoding=encoding)
    fast_names = tuple(f"_{i}" for i in range(2 * len(names) - 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(
                path,
                sep=":",
                header=None,
                names=list(fast_names),
                dtype=object,
                keep_default_na=False,
                na_values=[""],
                index_col=False,
                quoting=csv.QUOTE_NONE,
                encoding=encoding,
                compression=_compression(path),
            )
        gaps = frame[list(fast_names[1::2])]
        clean = len(frame) > 0 and bool(gaps.isna().all().all())
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, ValueError, OSError, EOFError):
        clean = False  # the careful read below says what is wrong
    if not clean:
        return _read_text(layout, str_columns=names)
    frame = frame[list(fast_names[0::2])]
    frame.columns = list(names)
    return _Table(frame, layout.file_name, lambda row: _line_of_row(layout, row))


def _read_parquet(path: Path) -> _Table:
    """A Parquet file (needs pyarrow); rows are named by their 0-based index, there are no lines."""
    try:
        frame = pd.read_parquet(path)
    except ImportError as error:
        raise ImportError("reading Parquet files needs pyarrow: pip install 'liverec[parquet]'") from error
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{path.name}: not a readable Parquet file ({_first_line(str(error))})") from None
    if len(frame) == 0:
        raise DataFormatError(f"{path.name}: no data rows")
    return _Table(frame.reset_index(drop=True), path.name, lambda row: f"row index {row}")


def _read_jsonl(path: Path) -> _Table:
    """JSON lines: one object per line; blank lines are skipped."""
    try:
        frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8", compression=_compression(path))
    except UnicodeDecodeError as error:
        raise _undecodable(path.name, "utf-8", error) from None
    except (OSError, EOFError) as error:
        raise _unreadable(path.name, error) from None
    except (ValueError, TypeError) as error:  # pandas: ValueError for bad JSON, TypeError for non-object lines
        _raise_bad_json(path, str(error))
    if len(frame) == 0:
        raise DataFormatError(f"{path.name}: the file is empty (no JSON lines)")
    return _Table(frame, path.name, lambda row: _json_line_of_row(path, row))


# --------------------------------------------------------------------------------------------------
# Checks and conversions (vectorised); errors are located only once one is found


@dataclass(frozen=True)
class _Check:
    """Rows of one column that failed a check, and what the column should have held."""

    column: str
    bad: np.ndarray  # [n_rows] bool
    expected: str


def _require_columns(table: _Table, columns: tuple[str, ...]) -> None:
    present = [str(c) for c in table.frame.columns]
    for column in columns:
        if column not in present:
            raise DataFormatError(f"{table.file_name}: missing column {column!r} (found columns: {', '.join(present)})")


def _optional_column(table: _Table, column: str, default: str) -> str | None:
    """``column`` if the file has it; None if not and it has its default name; an error if a chosen name is absent."""
    if column in table.frame.columns:
        return column
    if column != default:
        _require_columns(table, (column,))
    return None


def _events_frame(
    table: _Table,
    *,
    user: str,
    item: str,
    timestamp: str | None = None,
    value: str | None = None,
    event_type: str | None = None,
    default_event_type: str,
) -> pd.DataFrame:
    """The standard frame of :meth:`Dataset.from_frame` from a raw table, after checking every used column.

    Absent optional columns get their defaults: row order as timestamps, 1.0 as value.
    """
    raw = table.frame
    n_rows = len(raw)
    user_ids, bad_users = _id_strings(raw[user])
    item_ids, bad_items = _id_strings(raw[item])
    checks = [_Check(user, bad_users, "a non-empty id"), _Check(item, bad_items, "a non-empty id")]
    timestamps = np.arange(n_rows, dtype=np.float64)
    if timestamp is not None:
        timestamps = _unix_seconds(raw[timestamp])
        checks.append(_Check(timestamp, ~np.isfinite(timestamps), _TIMESTAMP_EXPECTED))
    values = np.ones(n_rows, dtype=np.float64)
    if value is not None:
        values, bad_values = _numbers(raw[value])
        checks.append(_Check(value, bad_values, "a number"))
    _raise_first_problem(table, checks)
    if event_type is None:
        event_types = np.empty(n_rows, dtype=object)
        event_types.fill(default_event_type)  # np.full is ~30x slower for object arrays
    else:  # an empty event type means the default one
        names, unnamed = _id_strings(raw[event_type])
        event_types = np.where(unnamed, default_event_type, names)
    # Object columns, not pandas' inferred str dtype (from_frame wants numpy arrays of str back), and
    # copy=False: consolidating 25M-row object columns into one block would copy them for nothing.
    columns = {
        "user_id": pd.Series(user_ids, dtype=object, copy=False),
        "item_id": pd.Series(item_ids, dtype=object, copy=False),
        "timestamp": pd.Series(timestamps, copy=False),
        "event_type": pd.Series(event_types, dtype=object, copy=False),
        "value": pd.Series(values, copy=False),
    }
    return pd.DataFrame(columns, copy=False)


def _id_strings(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ids as an object array of str, and the mask of missing or empty ones.

    Text columns are passed through without a copy (25M ids cost seconds per conversion); numbers
    (Parquet, JSON) become their decimal text, and whole floats (JSON ints next to a null) lose ``.0``.
    """
    missing = column.isna().to_numpy()
    if pd.api.types.is_float_dtype(column.dtype):
        present = column[~missing]
        if bool((present == np.floor(present)).all()):
            column = column.astype("Int64")
    values = column.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = column.astype(str).to_numpy(dtype=object)
    bad = missing | (values == "")
    return values, bad


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and the mask of entries that are not finite numbers."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values, ~np.isfinite(values)


def _unix_seconds(column: pd.Series) -> np.ndarray:
    """Unix seconds (float64, NaN where unparseable) from numbers, ISO-8601 strings or datetimes.

    Numbers are taken as Unix seconds; ISO-8601 strings without a zone are taken as UTC. A column
    may mix both (only the entries that are not numbers go through the date parser).
    """
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        stamps = pd.Series(column)
        stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
        return ((stamps - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    seconds, not_numbers = _numbers(column)
    dates = not_numbers & column.notna().to_numpy()
    if dates.any():
        seconds = seconds.copy()  # pandas may hand out a read-only view
        parsed = pd.to_datetime(column[dates].astype(str), utc=True, format="ISO8601", errors="coerce")
        seconds[dates] = ((parsed - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    return seconds


def _raise_first_problem(table: _Table, checks: list[_Check]) -> None:
    """Raise for the earliest row (in file order) that fails any check; do nothing when all pass."""
    first: tuple[int, int] | None = None  # (row, index into checks)
    for index, check in enumerate(checks):
        if check.bad.any():
            row = int(np.argmax(check.bad))
            if first is None or row < first[0]:
                first = (row, index)
    if first is None:
        return
    row, index = first
    check = checks[index]
    where = table.locate(row)  # may itself raise: a short line before or at this row
    raw = table.frame[check.column].iloc[row]
    got = "an empty field" if _is_missing(raw) or raw == "" else repr(_shorten(str(raw)))
    raise DataFormatError(f"{table.file_name}, {where}, column {check.column!r}: expected {check.expected}, got {got}")


def _is_missing(value: object) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


# --------------------------------------------------------------------------------------------------
# Error path: scan the file again to find the line an editor shows


def _records(layout: _TextLayout) -> Iterator[tuple[int, list[str]]]:
    """(editor line, fields) of each record pandas reads, header included, skipping blank lines like pandas.

    A record's line is where it starts; a quoted field may carry it over several lines. A line
    counts as blank when it is whitespace only and holds no separator.
    """
    with _open_text(layout.path, layout.encoding, newline="" if layout.quoted else None) as handle:
        if layout.quoted:
            reader = csv.reader(handle, delimiter=layout.sep or ",")
            previous_end = 0
            try:
                for fields in reader:
                    start, previous_end = previous_end + 1, reader.line_num
                    if not _is_blank(fields):
                        yield start, fields
            except csv.Error as error:
                raise DataFormatError(f"{layout.file_name}, line {reader.line_num}: {error}") from None
            return
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            fields = text.split() if layout.sep is None else text.split(layout.sep)
            if fields and not _is_blank(fields):
                yield number, fields


def _is_blank(fields: list[str]) -> bool:
    return len(fields) == 0 or (len(fields) == 1 and not fields[0].strip())


def _field_count_error(layout: _TextLayout, line: int, expected: int, got: int) -> DataFormatError:
    hint = f" ({layout.hint})" if layout.hint else ""
    return DataFormatError(f"{layout.file_name}, line {line}: expected {expected} fields, got {got}{hint}")


def _line_of_row(layout: _TextLayout, row: int) -> str:
    """``"line N"`` of data row ``row`` (0-based); raises for a line with the wrong field count on the way."""
    expected = None if layout.names is None else len(layout.names)
    position = 0
    for number, fields in _records(layout):
        if expected is None:  # the header line sets the field count
            expected = len(fields)
            continue
        if len(fields) != expected:
            raise _field_count_error(layout, number, expected, len(fields))
        if position == row:
            return f"line {number}"
        position += 1
    return f"data row {row + 1}"  # the scan disagrees with pandas; still say which row


def _raise_field_count(layout: _TextLayout, pandas_message: str) -> NoReturn:
    """Raise the field-count error of the first line that does not match the header (or the layout)."""
    expected = None if layout.names is None else len(layout.names)
    for number, fields in _records(layout):
        if expected is None:
            expected = len(fields)
        elif len(fields) != expected:
            raise _field_count_error(layout, number, expected, len(fields))
    if "EOF inside string" in pandas_message:  # the last record the scan saw swallowed the rest of the file
        last_start = max((number for number, _ in _records(layout)), default=1)
        raise DataFormatError(f"{layout.file_name}, line {last_start}: a quoted field opens here and is never closed")
    match = _PANDAS_BAD_LINE.search(pandas_message)
    if match is not None:  # pandas counts the header (and blank lines) as lines too
        raise _field_count_error(layout, int(match[2]), int(match[1]), int(match[3]))
    raise DataFormatError(f"{layout.file_name}: {_first_line(pandas_message)}")


def _raise_bad_json(path: Path, pandas_message: str) -> NoReturn:
    """Raise for the first line that is not a JSON object."""
    with _open_text(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{path.name}, line {number}: expected a JSON object, got invalid JSON "
                    f"{_shorten(text)!r} ({error.msg} at column {error.colno})"
                ) from None
            if not isinstance(parsed, dict):
                raise DataFormatError(f"{path.name}, line {number}: expected a JSON object, got {_shorten(text)!r}")
    raise DataFormatError(f"{path.name}: expected JSON lines, could not read them ({_first_line(pandas_message)})")


def _json_line_of_row(path: Path, row: int) -> str:
    """``"line N"`` of the ``row``-th (0-based) non-blank line of a JSON-lines file."""
    position = 0
    with _open_text(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if position == row:
                return f"line {number}"
            position += 1
    return f"data row {row + 1}"


def _undecodable(file_name: str, encoding: str, error: UnicodeDecodeError) -> DataFormatError:
    shown = "UTF-8" if encoding.startswith("utf-8") else encoding
    return DataFormatError(f"{file_name}: expected {shown} text, got bytes that do not decode ({error.reason})")


def _unreadable(file_name: str, error: BaseException) -> DataFormatError:
    return DataFormatError(f"{file_name}: could not be read ({_first_line(str(error))})")


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_source(
    path: str | Path | None, *, synthetic: int | None = None, seed: int = 0, format: str | None = None, **columns: str
) -> tuple[Dataset, str]:
    """The dataset of ``--data PATH`` (a file or folder) or ``--synthetic N_EVENTS``, and how to describe its source.

    ``columns`` maps the generic events layout (``user_col``, ``item_col``, ...; see :func:`load_dataset`).
    """
    from liverec.data.synthetic import SyntheticConfig, generate

    if synthetic:
        if synthetic < 1:
            raise UsageError(f"--synthetic: expected a positive number of events, got {synthetic}")
        # about 50 events per user and 100 per item, capped so small and large streams both make sense
        n_users = max(1, min(synthetic // 50, 20_000))
        n_items = max(10, min(synthetic // 100, 10_000))
        config = SyntheticConfig(n_users=n_users, n_items=n_items, n_events=synthetic, seed=seed)
        try:
            dataset, _truth = generate(config)
        except ValueError as error:
            raise UsageError(f"--synthetic: {error}") from None
        return dataset, f"synthetic(n_events={synthetic}, n_users={n_users}, n_items={n_items}, seed={seed})"
    if path is None:
        raise UsageError("--data: a dataset file or folder is required (or --synthetic N_EVENTS)")
    return load_dataset(path, format=format, **columns), str(path)
