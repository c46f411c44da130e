"""Online experiments: arms, sticky assignment, where experiments are kept, and what each arm earned.

An :class:`Experiment` splits the users between *live arms*, each a way of answering (a model version and an
exploration policy with its settings) with a traffic share; the shares sum to 1. A user's arm is fixed by a
hash: blake2b of the stored user id keyed with the experiment id, read as a number ``u`` uniform in [0, 1),
lands in the arm whose cumulative share interval holds it (:func:`assignment_point`). So the assignment is
sticky, the same on every replica and after a restart, and needs no table keyed by user (nothing to erase);
another experiment id shuffles the users anew. *Shadow arms* get no traffic: for each user of the experiment
their list is computed beside the live one and logged as a shadow impression, never shown (apprentice mode).

Experiments are kept by an :class:`ExperimentStore`: ``<data-dir>/experiments.db`` (SQLite) in the embedded
deployment, the Redis hash ``P:experiments`` with the Redis backend, so that every replica serves the same
assignment. One experiment runs at a time. The store also keeps the *serving policy*: the policy a promoted
arm made the default (it outranks the ``explore`` setting from then on).

:func:`experiment_report` turns an experiment's logged impressions and their joined rewards into per-arm
figures: impressions, users, reward (the in-window reward of each list, summed), the reward rate (mean reward
per impression) with a 95 % t interval, each arm's difference with the control (the first arm) with a Welch
t-test on per-impression rewards (two-sided p-value; for 0/1 rewards with many impressions it is the
two-proportion z-test), and a sample-ratio-mismatch check: a chi-square test of the users per live arm
against the shares, flagged below p = 0.001.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats

from liverec.events.impressions import Impression, Reward, list_reward
from liverec.policies import POLICIES, ExploreConfig

__all__ = [
    "EXPERIMENTS_FILE",
    "SRM_ALPHA",
    "Arm",
    "Experiment",
    "ExperimentConflict",
    "ExperimentStore",
    "RedisExperimentStore",
    "ReportBuilder",
    "SQLiteExperimentStore",
    "assignment_point",
    "experiment_report",
    "mean_interval",
    "sample_ratio_test",
    "welch_test",
]

EXPERIMENTS_FILE = "experiments.db"
#: Below this p-value the users per arm do not match the shares: the assignment or the logging is broken.
SRM_ALPHA = 0.001
#: How long a process trusts the running experiment and the serving policy it read (seconds).
REFRESH_S = 1.0
#: How far the live shares may sum away from 1.
SHARE_TOLERANCE = 1e-6
#: The statuses of an experiment: ``running`` assigns users; ``stopped`` and ``promoted`` do not.
STATUSES = ("running", "stopped", "promoted")
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAME = re.compile(NAME_PATTERN)
#: The exploration settings an arm may set (the fields of :class:`~liverec.policies.ExploreConfig`).
POLICY_SETTINGS = tuple(f.name for f in dataclasses.fields(ExploreConfig))


class ExperimentConflict(RuntimeError):
    """The store refused a change that conflicts with what it holds (an id taken, another experiment running,
    an experiment no longer in the state the change expected)."""


def assignment_point(experiment_id: str, user_key: str) -> float:
    """The user's point in [0, 1) for ``experiment_id``: blake2b of the stored user id, keyed with the experiment
    id (at most 64 bytes), its first 8 bytes read as an integer / 2**64. Deterministic across processes."""
    digest = hashlib.blake2b(user_key.encode(), digest_size=8, key=experiment_id.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Arm:
    """One way of answering: a model version (None: the one served at the time of the request), an exploration
    policy (None: the deployment's default) and overrides of its settings (``ExploreConfig`` fields), and a
    re-ranking (``rerank``: a :data:`liverec.rerank.RERANKERS` name or ``"none"``; None: the request's, i.e. the
    deployment's default) at ``rerank_lambda`` (None: the serving default for that re-ranker)."""

    name: str
    share: float = 0.0  # of the experiment's users; 0 for a shadow arm
    model_version: str | None = None
    policy: str | None = None
    policy_settings: dict[str, Any] = field(default_factory=dict)  # ExploreConfig fields -> values
    shadow: bool = False
    rerank: str | None = None
    rerank_lambda: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "share", float(self.share))  # stored and compared as JSON: one type
        if not _NAME.match(self.name):
            raise ValueError(f"arm name: expected 1-64 letters, digits or _.-, got {self.name!r}")
        if self.policy is not None and self.policy not in POLICIES:
            raise ValueError(
                f"arm {self.name!r} policy: expected one of {', '.join(sorted(POLICIES))}, got {self.policy!r}"
            )
        unknown = sorted(set(self.policy_settings) - set(POLICY_SETTINGS))
        if unknown:
            raise ValueError(
                f"arm {self.name!r} policy_settings: unknown setting(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(POLICY_SETTINGS)}"
            )
        candidates = self.policy_settings.get("candidates", 1)
        if isinstance(candidates, bool) or not isinstance(candidates, int):
            raise ValueError(f"arm {self.name!r} policy_settings.candidates: expected an integer, got {candidates!r}")
        try:
            ExploreConfig(**self.policy_settings)
        except ValueError as error:  # names the setting, its value and its range
            raise ValueError(f"arm {self.name!r} policy_settings.{error}") from None
        self._check_rerank()
        if self.shadow and self.share != 0:
            raise ValueError(f"arm {self.name!r} share: a shadow arm gets no traffic, expected 0, got {self.share!r}")
        if not self.shadow and not (0 < self.share <= 1):
            raise ValueError(f"arm {self.name!r} share: expected a number in (0, 1], got {self.share!r}")

    def _check_rerank(self) -> None:
        """ValueError (one line) for an unknown re-ranker, or a λ outside its range or without a re-ranker."""
        if self.rerank is None and self.rerank_lambda is None:
            return
        from liverec.rerank import RERANKERS  # only when set: it loads torch (through the model base class)

        if self.rerank == "none" and self.rerank_lambda is None:
            return
        if self.rerank is None or self.rerank == "none":
            raise ValueError(
                f"arm {self.name!r} rerank_lambda: given without a re-ranker; expected rerank with it, got "
                f"rerank={self.rerank!r}"
            )
        if self.rerank not in RERANKERS:
            raise ValueError(
                f"arm {self.name!r} rerank: expected one of none, {', '.join(sorted(RERANKERS))}, got {self.rerank!r}"
            )
        if self.rerank_lambda is not None:
            if isinstance(self.rerank_lambda, bool) or not isinstance(self.rerank_lambda, int | float):
                raise ValueError(f"arm {self.name!r} rerank_lambda: expected a number, got {self.rerank_lambda!r}")
            try:
                RERANKERS[self.rerank].check_strength(float(self.rerank_lambda))
            except ValueError as error:
                raise ValueError(f"arm {self.name!r} rerank_lambda: {error}") from None

    def explore_config(self, base: ExploreConfig) -> ExploreConfig:
        """``base`` with this arm's settings over it."""
        return dataclasses.replace(base, **self.policy_settings) if self.policy_settings else base

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "share": self.share,
            "model_version": self.model_version,
            "policy": self.policy,
            "policy_settings": dict(self.policy_settings),
            "shadow": self.shadow,
            # written only when set: an arm without re-ranking is stored as before
            **({"rerank": self.rerank, "rerank_lambda": self.rerank_lambda} if self.rerank is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Arm:
        return cls(
            name=str(data["name"]),
            share=float(data.get("share", 0.0)),
            model_version=data.get("model_version"),
            policy=data.get("policy"),
            policy_settings={str(k): v for k, v in (data.get("policy_settings") or {}).items()},
            shadow=bool(data.get("shadow", False)),
            rerank=data.get("rerank"),
            rerank_lambda=data.get("rerank_lambda"),
        )


@dataclass(frozen=True)
class Experiment:
    """An experiment's definition and its status. The first arm is the control; live arms' shares sum to 1."""

    experiment_id: str
    arms: tuple[Arm, ...]
    name: str = ""
    status: str = "running"
    created_at: float = 0.0
    stopped_at: float | None = None
    winner: str | None = None  # the arm promoted

    def __post_init__(self) -> None:
        if not _NAME.match(self.experiment_id):
            raise ValueError(f"experiment_id: expected 1-64 letters, digits or _.-, got {self.experiment_id!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got {self.status!r}")
        names = [arm.name for arm in self.arms]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"arms: arm names must be unique, {', '.join(map(repr, repeated))} repeated")
        live = self.live_arms
        if not live:
            raise ValueError(f"arms: expected at least one live arm, got {len(self.arms)} shadow arm(s) only")
        if self.arms[0].shadow:
            raise ValueError(f"arms: the first arm is the control and must be live; {self.arms[0].name!r} is a shadow")
        total = math.fsum(arm.share for arm in live)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = ", ".join(f"{arm.name}={arm.share:g}" for arm in live)
            raise ValueError(f"arms: the live arms' shares must sum to 1, got {total:.6g} ({shares})")
        if self.winner is not None and self.winner not in names:
            raise ValueError(f"winner: expected one of the arms {', '.join(names)}, got {self.winner!r}")

    @property
    def live_arms(self) -> tuple[Arm, ...]:
        return tuple(arm for arm in self.arms if not arm.shadow)

    @property
    def shadow_arms(self) -> tuple[Arm, ...]:
        return tuple(arm for arm in self.arms if arm.shadow)

    @property
    def control(self) -> Arm:
        return self.arms[0]

    def arm(self, name: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.name == name), None)

    @functools.cached_property
    def _bounds(self) -> list[float]:
        """The live arms' cumulative shares (computed once per experiment object)."""
        return list(itertools.accumulate(arm.share for arm in self.live_arms))

    def assign(self, user_key: str) -> Arm:
        """The live arm of ``user_key`` (the stored user id): sticky, by :func:`assignment_point`."""
        live = self.live_arms
        index = bisect.bisect_right(self._bounds, assignment_point(self.experiment_id, user_key))
        return live[min(index, len(live) - 1)]  # a point past a rounded last bound belongs to the last arm

    def with_status(self, status: str, winner: str | None = None) -> Experiment:
        stopped = self.stopped_at if self.stopped_at is not None or status == "running" else time.time()
        return dataclasses.replace(self, status=status, stopped_at=stopped, winner=winner or self.winner)

    def to_json(self) -> dict[str, Any]:
        return {
            "experiment_id": self.experiment_id,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "stopped_at": self.stopped_at,
            "winner": self.winner,
            "arms": [arm.to_json() for arm in self.arms],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Experiment:
        return cls(
            experiment_id=str(data["experiment_id"]),
            arms=tuple(Arm.from_json(arm) for arm in data["arms"]),
            name=str(data.get("name") or ""),
            status=str(data.get("status", "running")),
            created_at=float(data.get("created_at", 0.0)),
            stopped_at=data.get("stopped_at"),
            winner=data.get("winner"),
        )


# -- statistics ------------------------------------------------------------------------------------------------
def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """The mean of ``values`` and its two-sided t interval at ``level`` (None where undefined: n < 2)."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = float(np.mean(values))
    if n < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class WelchResult:
    """``b`` minus ``a``: the difference of the means, its 95 % interval, Welch's t, its degrees of freedom and
    the two-sided p-value (None where undefined)."""

    difference: float | None
    low: float | None
    high: float | None
    t: float | None
    df: float | None
    p_value: float | None


def welch_test(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> WelchResult:
    """Welch's unequal-variance t-test of mean(b) − mean(a), two-sided.

    t = (mean_b − mean_a) / sqrt(s_a²/n_a + s_b²/n_b), with the Welch–Satterthwaite degrees of freedom. Both
    samples constant: the p-value is 1 when the means are equal and 0 when they differ (no noise at all)."""
    if len(a) == 0 or len(b) == 0:
        return WelchResult(None, None, None, None, None, None)
    difference = float(np.mean(b) - np.mean(a))
    if len(a) < 2 or len(b) < 2:
        return WelchResult(difference, None, None, None, None, None)
    va, vb = float(np.var(a, ddof=1)) / len(a), float(np.var(b, ddof=1)) / len(b)
    se2 = va + vb
    if se2 == 0:
        p = 1.0 if difference == 0 else 0.0
        return WelchResult(difference, difference, difference, None, None, p)
    se = math.sqrt(se2)
    df = se2**2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = difference / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return WelchResult(difference, difference - half, difference + half, t, df, p)


def sample_ratio_test(observed: Sequence[int], shares: Sequence[float]) -> tuple[float | None, float | None]:
    """Pearson's chi-square of ``observed`` counts against ``shares`` × their total: (statistic, p-value), with
    len − 1 degrees of freedom; (None, None) when nothing was observed or there is one arm."""
    total = sum(observed)
    if total == 0 or len(observed) < 2:
        return None, None
    expected = np.asarray(shares, dtype=np.float64) * total
    counts = np.asarray(observed, dtype=np.float64)
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, len(observed) - 1))


class ReportBuilder:
    """Accumulates what :func:`experiment_report` needs from an experiment's impressions, batch by batch (only the
    per-impression rewards and the user ids are kept, so a long experiment is read in bounded memory)."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.rewards: dict[str, list[float]] = {arm.name: [] for arm in experiment.arms}
        self.users: dict[str, set[str]] = {arm.name: set() for arm in experiment.arms}

    def wants(self, impression: Impression) -> bool:
        return impression.experiment_id == self.experiment.experiment_id and impression.arm in self.rewards

    def add(self, impressions: Iterable[Impression], rewards: Mapping[str, Sequence[Reward]]) -> None:
        """Count ``impressions`` of this experiment; ``rewards``: those joined to them, by recommendation id."""
        for impression in impressions:
            if not self.wants(impression):
                continue
            arm = str(impression.arm)
            earned = rewards.get(impression.recommendation_id, ())
            self.rewards[arm].append(0.0 if impression.shadow else float(list_reward(impression, earned)["reward"]))
            if impression.user_id is not None:
                self.users[arm].add(impression.user_id)

    def report(self) -> dict[str, Any]:
        """The per-arm figures (see the module docstring for the tests used)."""
        experiment = self.experiment
        control = np.asarray(self.rewards[experiment.control.name], dtype=np.float64)
        arms: list[dict[str, Any]] = []
        for arm in experiment.arms:
            values = np.asarray(self.rewards[arm.name], dtype=np.float64)
            entry: dict[str, Any] = {
                **arm.to_json(),
                "impressions": len(values),
                "users": len(self.users[arm.name]),
                "reward": None,
                "reward_rate": None,
                "reward_rate_ci": None,
                "difference": None,
                "difference_ci": None,
                "p_value": None,
            }
            if not arm.shadow:  # a shadow list is never shown: it earns nothing of its own
                mean, low, high = mean_interval(values)
                entry["reward"] = float(values.sum())
                entry["reward_rate"] = mean
                entry["reward_rate_ci"] = None if low is None or high is None else [low, high]
                if arm.name != experiment.control.name:
                    test = welch_test(control, values)
                    entry["difference"] = test.difference
                    entry["difference_ci"] = None if test.low is None or test.high is None else [test.low, test.high]
                    entry["p_value"] = test.p_value
            arms.append(entry)
        live = experiment.live_arms
        shares = [arm.share for arm in live]
        user_chi2, user_p = sample_ratio_test([len(self.users[arm.name]) for arm in live], shares)
        impression_chi2, impression_p = sample_ratio_test([len(self.rewards[arm.name]) for arm in live], shares)
        return {
            **experiment.to_json(),
            "control": experiment.control.name,
            "test": "Welch t-test of each arm's mean reward per impression against the control's, two-sided",
            "arms": arms,
            "sample_ratio": {
                "users_chi2": user_chi2,
                "users_p_value": user_p,
                "impressions_chi2": impression_chi2,
                "impressions_p_value": impression_p,
                "alpha": SRM_ALPHA,
                "mismatch": user_p is not None and user_p < SRM_ALPHA,
            },
        }


def experiment_report(
    experiment: Experiment, impressions: Iterable[Impression], rewards: Mapping[str, Sequence[Reward]]
) -> dict[str, Any]:
    """Per-arm figures of ``experiment`` from its logged ``impressions`` (live and shadow; others are ignored) and
    the ``rewards`` joined to them, by recommendation id (see :class:`ReportBuilder` to read them in batches)."""
    builder = ReportBuilder(experiment)
    builder.add(impressions, rewards)
    return builder.report()


# -- storage ---------------------------------------------------------------------------------------------------
class ExperimentStore(Protocol):
    """Where a deployment's experiments and its serving policy live (every replica reads the same)."""

    def create(self, experiment: Experiment) -> None:
        """Store a new running experiment; :class:`ExperimentConflict` when its id is taken or another runs."""
        ...

    def get(self, experiment_id: str) -> Experiment | None: ...
    def experiments(self) -> list[Experiment]:
        """Every experiment, oldest first."""
        ...

    def replace(self, before: Experiment, after: Experiment) -> None:
        """Store ``after`` in place of ``before`` (same id); :class:`ExperimentConflict` when the stored one is
        no longer ``before`` (another process changed it meanwhile)."""
        ...

    def running(self) -> Experiment | None:
        """The running experiment (re-read at most every :data:`REFRESH_S` seconds)."""
        ...

    def serving_policy(self) -> dict[str, Any] | None:
        """``{"policy": name, "policy_settings": {...}}`` set by the last promotion, or None."""
        ...

    def set_serving_policy(self, policy: str, policy_settings: Mapping[str, float]) -> None: ...
    def close(self) -> None: ...


class _Cached(ABC):
    """The running experiment and the serving policy as last read, re-read at most every :data:`REFRESH_S`."""

    def __init__(self) -> None:
        self._read_at = float("-inf")
        self._running: Experiment | None = None
        self._policy: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < REFRESH_S:
            return
        with self._lock:
            if now - self._read_at >= REFRESH_S:
                self._running, self._policy = self._read_current()
                self._read_at = time.monotonic()

    @abstractmethod
    def _read_current(self) -> tuple[Experiment | None, dict[str, Any] | None]:
        """The running experiment and the persisted serving policy, read from the store."""

    def invalidate(self) -> None:
        self._read_at = float("-inf")

    def running(self) -> Experiment | None:
        self._refresh()
        return self._running

    def serving_policy(self) -> dict[str, Any] | None:
        self._refresh()
        return self._policy


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SQLiteExperimentStore(_Cached):
    """``<data-dir>/experiments.db``: one row per experiment (its JSON), and the serving policy in ``meta``.

    Writes are rare (an admin's calls): each opens a connection, takes the write lock (``BEGIN IMMEDIATE``)
    and commits with ``synchronous=FULL``; reads are one indexed ``SELECT``."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        finally:
            conn.close()

    def create(self, experiment: Experiment) -> None:
        with self._connect(write=True) as conn:
            if conn.execute(
                "SELECT 1 FROM experiments WHERE experiment_id = ?", (experiment.experiment_id,)
            ).fetchone():
                raise ExperimentConflict(
                    f"experiment_id {experiment.experiment_id!r}: an experiment with this id exists"
                )
            running = conn.execute("SELECT experiment_id FROM experiments WHERE status = 'running'").fetchone()
            if running is not None:
                raise ExperimentConflict(
                    f"experiment {running[0]!r} is running; stop it first (one experiment runs at a time)"
                )
            conn.execute(
                "INSERT INTO experiments (experiment_id, status, created_at, body) VALUES (?, ?, ?, ?)",
                (experiment.experiment_id, experiment.status, experiment.created_at, _dumps(experiment.to_json())),
            )
        self.invalidate()

    def get(self, experiment_id: str) -> Experiment | None:
        with self._connect() as conn:
            row = conn.execute("SELECT body FROM experiments WHERE experiment_id = ?", (experiment_id,)).fetchone()
        return None if row is None else Experiment.from_json(json.loads(row[0]))

    def experiments(self) -> list[Experiment]:
        with self._connect() as conn:
            rows = conn.execute("SELECT body FROM experiments ORDER BY created_at, experiment_id").fetchall()
        return [Experiment.from_json(json.loads(row[0])) for row in rows]

    def replace(self, before: Experiment, after: Experiment) -> None:
        with self._connect(write=True) as conn:
            changed = conn.execute(
                "UPDATE experiments SET status = ?, body = ? WHERE experiment_id = ? AND body = ?",
                (after.status, _dumps(after.to_json()), before.experiment_id, _dumps(before.to_json())),
            ).rowcount
        self.invalidate()
        if not changed:
            raise ExperimentConflict(f"experiment {before.experiment_id!r} was changed meanwhile; read it again")

    def _read_current(self) -> tuple[Experiment | None, dict[str, Any] | None]:
        with self._connect() as conn:
            row = conn.execute("SELECT body FROM experiments WHERE status = 'running' LIMIT 1").fetchone()
            policy = conn.execute("SELECT value FROM meta WHERE key = 'serving_policy'").fetchone()
        running = None if row is None else Experiment.from_json(json.loads(row[0]))
        return running, None if policy is None else json.loads(policy[0])

    def set_serving_policy(self, policy: str, policy_settings: Mapping[str, float]) -> None:
        value = _dumps({"policy": policy, "policy_settings": dict(policy_settings)})
        with self._connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('serving_policy', ?)", (value,))
        self.invalidate()

    def close(self) -> None:
        return None  # no connection is kept between calls


_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
local running = redis.call('GET', KEYS[2])
if running then return 'running:' .. running end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 'ok'
"""

_REPLACE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= 'running' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


class RedisExperimentStore(_Cached):
    """The Redis backend's store: hash ``P:experiments`` (id -> JSON), key ``P:experiments:running`` (the running
    experiment's id: set and cleared by scripts, so two replicas cannot both start one), key
    ``P:serving-policy`` (JSON)."""

    def __init__(self, client: Any, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.key = f"{prefix}:experiments"
        self.running_key = f"{prefix}:experiments:running"
        self.policy_key = f"{prefix}:serving-policy"
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)

    def create(self, experiment: Experiment) -> None:
        outcome = str(
            self._create(
                keys=[self.key, self.running_key], args=[experiment.experiment_id, _dumps(experiment.to_json())]
            )
        )
        self.invalidate()
        if outcome == "exists":
            raise ExperimentConflict(f"experiment_id {experiment.experiment_id!r}: an experiment with this id exists")
        if outcome.startswith("running:"):
            running = outcome.removeprefix("running:")
            raise ExperimentConflict(
                f"experiment {running!r} is running; stop it first (one experiment runs at a time)"
            )

    def get(self, experiment_id: str) -> Experiment | None:
        raw = self.client.hget(self.key, experiment_id)
        return None if raw is None else Experiment.from_json(json.loads(raw))

    def experiments(self) -> list[Experiment]:
        found = [Experiment.from_json(json.loads(raw)) for raw in self.client.hvals(self.key)]
        return sorted(found, key=lambda experiment: (experiment.created_at, experiment.experiment_id))

    def replace(self, before: Experiment, after: Experiment) -> None:
        changed = self._replace(
            keys=[self.key, self.running_key],
            args=[before.experiment_id, _dumps(before.to_json()), _dumps(after.to_json()), after.status],
        )
        self.invalidate()
        if not changed:
            raise ExperimentConflict(f"experiment {before.experiment_id!r} was changed meanwhile; read it again")

    def _read_current(self) -> tuple[Experiment | None, dict[str, Any] | None]:
        running_id, policy = self.client.mget([self.running_key, self.policy_key])
        running = None if running_id is None else self.get(str(running_id))
        return running, None if policy is None else json.loads(policy)

    def set_serving_policy(self, policy: str, policy_settings: Mapping[str, float]) -> None:
        self.client.set(self.policy_key, _dumps({"policy": policy, "policy_settings": dict(policy_settings)}))
        self.invalidate()

    def close(self) -> None:
        return None  # the client is the backend's
