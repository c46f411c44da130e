"""The simulator: users with known preferences meet a policy through the serving engine, click, and teach it.

One run (:meth:`Simulator.run`) for one policy and one seed:

1. **The world.** The synthetic generator (:func:`liverec.data.synthetic.generate`) makes a stream and its truth;
   its first ``past_events`` events are the past (imported into a fresh data folder; the first model is trained
   on them and promoted), the next ``horizon`` events are the *visits* of the live part: user ``u`` comes at
   time ``t``. ``new_item_fraction`` of the catalogue is released during the live part (``release_window`` of
   the generator): each such item enters the catalogue (``Engine.put_item``, attribute ``created_at``) when the
   simulation clock reaches its release time.
2. **Serving.** Visits go ``batch`` at a time through :meth:`Engine.recommend_many` (an in-process engine, no
   background threads, over that data folder) with ``explore=<policy>``: the model's ranking, the popularity
   fill, the policy, the impression with its propensities in the log — the code path of ``GET
   /v1/users/{id}/recommendations``.
3. **Clicks.** Each shown item is clicked with probability examination(position) × relevance (:class:`ClickModel`
   on the generator's truth at ``t``). Clicks are ingested as ``click`` events carrying the list's
   ``recommendation_id`` and joined to it (:meth:`Engine.join_rewards`), as ``POST /v1/events`` does; with
   probability ``organic_share`` the visit's own generator event (what the user found without the list) is
   ingested as a ``view``.
4. **Learning.** The online updater (:class:`liverec.online.updater.Updater`, in-process, gate included) reads
   the log after every batch and updates the model every ``update_every`` events; the engine then swaps to
   the promoted version. New items reach the model only through events (clicks or organic views). Every item
   enters the catalogue with its category (``cluster<c>``, the generator's taste cluster of the item) before it
   can be shown, so a model with side features (the default: SASRec with ``side_features``) starts a new item
   from the items sharing its category when the updater grows its table (``Updater._describe_new_items``).

Measured per visit: clicks, the list's expected clicks, the oracle's expected clicks (the best eligible list
under the same click model); per new item: visits from its release to its first click on a served list.

Clocks: events carry the simulation clock (the generator's seconds, so the past and the live events share
one time line, which the state's decayed popularity and SASRec's session gaps read); the engine stamps lists
with the wall clock, so the ``delay_s`` of a simulator's reward means nothing. The simulation runs far faster
than its clock, so the cold policy's age cut-off is applied in simulated days by the simulator: a released
item carries ``created_at`` (which the engine's cold mask reads with a cut-off set beyond any run) until it is
``cold_age_days`` old, checked whenever an item is released.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverec.backends import EVENTS_FILE, MODELS_DIR
from liverec.data.interactions import Dataset
from liverec.data.synthetic import SECONDS_PER_DAY, SyntheticConfig, SyntheticTruth, generate
from liverec.events.log import SQLiteEventLog
from liverec.events.schema import Event
from liverec.models import create_model
from liverec.online.updater import Updater, updater_config
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.policies import POLICIES, Candidates, ExploreConfig, Slate
from liverec.registry import ModelRegistry
from liverec.serving.engine import Engine, RecommendRequest
from liverec.settings import Settings
from liverec.simulation.clicks import ClickModel, Context, list_reward, oracle_reward

__all__ = ["SimulationConfig", "SimulationRun", "Simulator", "World"]

#: The cold policy's cut-off handed to the engine: beyond any run, so ``created_at`` alone decides (see above).
_NEVER_OLD_S = 100 * 365 * SECONDS_PER_DAY
#: Default hyperparameters of the models the simulator knows to be small and fast on a CPU (SASRec: with the
#: catalogue's categories as side features, so that a new item starts from its category's items).
SMALL_MODELS: dict[str, dict[str, Any]] = {
    "mf-bpr": {"n_factors": 32, "n_epochs": 30, "partial_fit_epochs": 5},
    "sasrec": {
        "dim": 32,
        "n_layers": 1,
        "max_len": 50,
        "max_epochs": 30,
        "patience": 3,
        "refit": False,
        "side_features": True,
    },
}


@dataclass(frozen=True)
class SimulationConfig:
    """Every setting of a simulation (one source for the command line and the Python API)."""

    n_users: int = 500
    n_items: int = 300
    n_clusters: int = 10
    past_events: int = 10_000  # the generator's events before the live part: the first model's training data
    horizon: int = 3_000  # visits (served lists) in the live part
    new_item_fraction: float = 0.3  # share of the catalogue released during the live part
    organic_share: float = 0.2  # share of visits whose own generator event is logged as a view
    p_sequential: float = 0.3  # the generator's: P(the next item is a planted successor of the previous one)
    drift: bool = False  # the generator's: tastes move from start to end clusters over the span
    duration_days: float = 120.0  # the generator's span (past and live part)
    k: int = 10
    batch: int = 10  # visits served by one recommend_many call (concurrent requests)
    model: str = "sasrec"  # SMALL_MODELS' small SASRec with side features (a run: 13-37 s at one thread here)
    model_params: Mapping[str, Any] = field(default_factory=dict)  # over SMALL_MODELS' defaults
    update_every: int = 200  # new events between online updates
    gate_events: int = 100  # events the updater's gate judges a candidate on
    gate_margin: float = 0.05  # the gate judges on clicks on the serving model's own lists, which favours it
    windows: int = 10  # equal windows of the horizon for CTR per window
    explore: ExploreConfig = field(default_factory=ExploreConfig)  # cold_age_s is not used: cold_age_days is
    cold_age_days: float = 7.0  # cold policy: items younger than this (simulated days) are boosted
    clicks: ClickModel = field(default_factory=ClickModel)

    def __post_init__(self) -> None:
        for name, minimum in (
            ("n_users", 1),
            ("n_items", 2),
            ("n_clusters", 1),
            ("past_events", 1),
            ("horizon", 1),
            ("k", 1),
            ("batch", 1),
            ("update_every", 1),
            ("gate_events", 1),
            ("windows", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
        if self.past_events < self.n_users:
            raise ValueError(f"past_events: expected at least n_users={self.n_users}, got {self.past_events}")
        if self.windows > self.horizon:
            raise ValueError(f"windows: expected at most horizon={self.horizon}, got {self.windows}")
        for name in ("new_item_fraction", "organic_share", "p_sequential"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        if self.new_item_fraction >= 1.0:
            raise ValueError(f"new_item_fraction: expected a number in [0, 1), got {self.new_item_fraction!r}")
        for name in ("duration_days", "cold_age_days"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")
        if not (math.isfinite(self.gate_margin) and self.gate_margin >= 0):
            raise ValueError(f"gate_margin: expected a number >= 0, got {self.gate_margin!r}")
        try:
            create_model(self.model, **self.params())
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"model: {error}") from None

    def params(self) -> dict[str, Any]:
        """The model's hyperparameters: the small defaults of :data:`SMALL_MODELS`, then ``model_params``."""
        return {**SMALL_MODELS.get(self.model, {}), **dict(self.model_params)}

    def synthetic(self, seed: int) -> SyntheticConfig:
        """The generator's configuration for ``seed``: the past, then the live part with every release in it."""
        live_start = self.past_events / (self.past_events + self.horizon)
        return SyntheticConfig(
            n_users=self.n_users,
            n_items=self.n_items,
            n_events=self.past_events + self.horizon,
            n_clusters=min(self.n_clusters, self.n_items),
            duration_days=self.duration_days,
            p_sequential=self.p_sequential,
            drift=self.drift,
            new_item_fraction=self.new_item_fraction,
            release_window=(live_start, 1.0),
            seed=seed,
        )

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_params"] = self.params()
        return out


@dataclass(frozen=True)
class World:
    """A seed's generated stream split into the past and the visits of the live part (truth item ids)."""

    seed: int
    dataset: Dataset
    truth: SyntheticTruth
    start: float  # the simulation clock at the first visit (seconds of the generator's time line)
    visit_users: np.ndarray  # [horizon] int64
    visit_times: np.ndarray  # [horizon] float64, non-decreasing
    visit_items: np.ndarray  # [horizon] int64: the generator's event of the visit (the organic find)
    past_last_item: np.ndarray  # [n_users] int64: each user's last item of the past (-1: none)
    past_seen: list[set[int]]  # per user: the items of the past

    @property
    def initial_items(self) -> np.ndarray:
        """Truth ids in the catalogue at the start (released by the first visit)."""
        return np.flatnonzero(self.truth.release_time <= self.start)

    @property
    def new_items(self) -> np.ndarray:
        """Truth ids released during the live part, in release order."""
        live = np.flatnonzero(self.truth.release_time > self.start)
        return live[np.argsort(self.truth.release_time[live], kind="stable")]


@dataclass
class SimulationRun:
    """What one run measured (per visit ``[horizon]``, per new item ``[n_new]``), and its contexts if recorded."""

    policy: str
    seed: int
    clicks: np.ndarray  # [horizon] clicks on the served list
    expected: np.ndarray  # [horizon] the served list's expected clicks
    oracle: np.ndarray  # [horizon] the best list's expected clicks
    shown: np.ndarray  # [horizon] items shown
    new_items: np.ndarray  # [n_new] truth ids released during the run
    arrived_at: np.ndarray  # [n_new] visit index of the release
    first_click_at: np.ndarray  # [n_new] visit index of the first click on a served list (-1: never)
    first_shown_at: np.ndarray  # [n_new] visit index of the first list showing it (-1: never)
    versions: int  # model versions promoted during the run
    seconds: float
    contexts: list[Context] = field(default_factory=list)
    data_dir: Path | None = None  # the data folder, when the caller gave one (else deleted)

    @property
    def horizon(self) -> int:
        return len(self.clicks)

    def steps_to_first_click(self) -> np.ndarray:
        """Visits from each new item's release to its first click; ``inf`` when never clicked."""
        steps = (self.first_click_at - self.arrived_at).astype(np.float64)
        steps[self.first_click_at < 0] = np.inf
        return steps

    def restricted_steps_to_first_click(self) -> np.ndarray:
        """Visits to the first click, never-clicked items counted as the visits left after their release (a
        restricted mean over them is finite even when most items were never clicked)."""
        steps = self.steps_to_first_click()
        left = (self.horizon - self.arrived_at).astype(np.float64)
        return np.minimum(steps, left)

    def window_ctr(self, windows: int) -> np.ndarray:
        """Clicks per shown item in ``windows`` equal windows of the horizon: ``[windows]``."""
        edges = np.linspace(0, self.horizon, windows + 1).round().astype(np.int64)
        clicks = np.add.reduceat(self.clicks, edges[:-1])
        shown = np.add.reduceat(self.shown, edges[:-1])
        return clicks / np.maximum(shown, 1)


class _CandidateTap:
    """Keeps the :class:`Candidates` the engine hands its policies, in call order (for the recorded contexts).

    The engine builds each policy once (:meth:`Engine.policy`); the tap wraps that instance's ``select`` so that
    what serving computes is recorded, not recomputed.
    """

    def __init__(self, engine: Engine, names: Sequence[str]) -> None:
        self.handed: list[Candidates] = []
        for name in names:
            policy = engine.policy(name)
            select = policy.select

            def recorded(
                candidates: Candidates,
                k: int,
                rng: np.random.Generator,
                _select: Callable[[Candidates, int, np.random.Generator], Slate] = select,
            ) -> Slate:
                self.handed.append(candidates)
                return _select(candidates, k, rng)

            setattr(policy, "select", recorded)  # noqa: B010 (an instance attribute over the method)

    def take(self) -> list[Candidates]:
        handed, self.handed = self.handed, []
        return handed


class Simulator:
    """Runs simulations of one :class:`SimulationConfig` (see the module docstring)."""

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config or SimulationConfig()
        self._worlds: dict[int, World] = {}

    # -- the world -------------------------------------------------------------------------------
    def world(self, seed: int) -> World:
        """The generated stream of ``seed``, split into the past and the visits (cached)."""
        if seed not in self._worlds:
            self._worlds[seed] = self._make_world(seed)
        return self._worlds[seed]

    def _make_world(self, seed: int) -> World:
        config = self.config
        dataset, truth = generate(config.synthetic(seed))
        inter = dataset.interactions  # rows in chronological order
        past = config.past_events
        start = float(inter.timestamps[past])
        last_item = np.full(config.n_users, -1, dtype=np.int64)
        last_item[inter.user_ids[:past]] = inter.item_ids[:past]  # the last write of a user wins: their newest
        seen: list[set[int]] = [set() for _ in range(config.n_users)]
        for user, item in zip(inter.user_ids[:past].tolist(), inter.item_ids[:past].tolist(), strict=True):
            seen[user].add(item)
        return World(
            seed=seed,
            dataset=dataset,
            truth=truth,
            start=start,
            visit_users=inter.user_ids[past:].astype(np.int64),
            visit_times=inter.timestamps[past:].astype(np.float64),
            visit_items=inter.item_ids[past:].astype(np.int64),
            past_last_item=last_item,
            past_seen=seen,
        )

    def prepare(self, seed: int, data_dir: Path) -> None:
        """A data folder with the past in its log, the initial catalogue, and the first model promoted."""
        world = self.world(seed)
        data_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings(data_dir, "greedy", seed)
        truth = world.truth
        with SQLiteEventLog(data_dir / EVENTS_FILE) as event_log:
            past = dataclasses.replace(world.dataset, items=None)  # the catalogue is written below: released items
            import_dataset(
                past, event_log, source="past", event_types=settings.event_types, limit=self.config.past_events
            )
            for item in world.initial_items.tolist():
                event_log.put_item(
                    _item_id(item), title=f"Item {item}", categories=[f"cluster{truth.item_cluster[item]}"]
                )
            data = read_log(event_log, settings.event_types)
        train_and_register(
            data, ModelRegistry(data_dir / MODELS_DIR), self.config.model, self.config.params(), seed=seed
        )

    def settings(self, data_dir: Path, policy: str, seed: int) -> Settings:
        """The engine's settings for a run: the policy and its hyperparameters, seeded draws, no threads."""
        explore = self.config.explore
        values: dict[str, Any] = dict(
            data_dir=data_dir,
            backend="embedded",  # the log in the data folder, as the off-policy checks read it
            pseudonym_secret=None,
            explore=policy,
            explore_epsilon=explore.epsilon,
            explore_temperature=explore.temperature,
            explore_candidates=explore.candidates,
            explore_cold_weight=explore.cold_weight,
            explore_cold_age_s=_NEVER_OLD_S,
            explore_seed=seed,
            synchronous="NORMAL",  # a simulation need not survive power loss
            updater=False,
            updater_every_events=self.config.update_every,
            updater_every_seconds=None,  # a cadence by events only: a run does not depend on the machine's speed
            gate_events=self.config.gate_events,
            gate_margin=self.config.gate_margin,
            gate_max_share=None,  # (the same: the gate's sample would follow measured costs)
            max_future_skew_s=None,
            max_k=max(1000, self.config.k),
            torch_threads=1,
        )
        return Settings(**values)  # the environment's LIVEREC_* fill the rest, as for serving

    # -- a run -----------------------------------------------------------------------------------
    def run(
        self,
        policy: str,
        seed: int,
        data_dir: Path | None = None,
        *,
        prepared: Path | None = None,
        record_contexts: bool = False,
    ) -> SimulationRun:
        """One run of ``policy`` on the world of ``seed``.

        ``data_dir``: the data folder to run in (kept; its log holds the impressions and rewards as serving writes
        them); default a temporary one, deleted after. ``prepared``: a folder :meth:`prepare` made for this seed,
        copied instead of preparing again (runs of several policies on one seed start from the same model).
        ``record_contexts``: keep a :class:`Context` per visit (for the true value of other policies).
        """
        if policy not in POLICIES:
            raise ValueError(f"policy: expected one of {', '.join(sorted(POLICIES))}, got {policy!r}")
        if data_dir is not None:
            return self._run_in(policy, seed, Path(data_dir), prepared, record_contexts, keep=True)
        with tempfile.TemporaryDirectory(prefix="liverec-simulate-") as folder:
            return self._run_in(policy, seed, Path(folder) / "data", prepared, record_contexts, keep=False)

    def _run_in(
        self, policy: str, seed: int, data_dir: Path, prepared: Path | None, record: bool, keep: bool
    ) -> SimulationRun:
        started = time.perf_counter()
        if prepared is not None:
            shutil.copytree(prepared, data_dir, dirs_exist_ok=True)
        else:
            self.prepare(seed, data_dir)
        world = self.world(seed)
        settings = self.settings(data_dir, policy, seed)
        engine = Engine(settings, background=False)
        updater = Updater(
            data_dir,
            settings.event_types,
            dataclasses.replace(updater_config(settings), seed=seed),
            engine.backend.state_config,
            log=engine.backend.open_log(readonly=True),
        )
        try:
            if not updater.start():
                raise RuntimeError(f"simulation: no model in {data_dir}")
            loop = _Loop(self.config, world, engine, updater, policy, seed, record)
            run = loop.run()
        finally:
            updater.close()
            engine.close()
        run.seconds = time.perf_counter() - started
        run.data_dir = data_dir if keep else None
        return run


def _item_id(item: int) -> str:
    return f"i{item}"


def _user_id(user: int) -> str:
    return f"u{user}"


class _Loop:
    """The visits of one run (see the module docstring); :meth:`run` does them all."""

    def __init__(
        self,
        config: SimulationConfig,
        world: World,
        engine: Engine,
        updater: Updater,
        policy: str,
        seed: int,
        record: bool,
    ) -> None:
        self.config, self.world, self.engine, self.updater, self.policy = config, world, engine, updater, policy
        self.truth = world.truth
        self.rng = np.random.default_rng([seed, 0x5151])  # clicks and organic finds; the same for every policy
        self.examination = config.clicks.examination(config.k)
        self.record = record
        self.tap = _CandidateTap(engine, [policy]) if record else None
        n_items = self.truth.n_items
        self.in_catalogue = np.zeros(n_items, dtype=bool)
        self.in_catalogue[world.initial_items] = True
        self.seen = [set(items) for items in world.past_seen]
        self.last_item = world.past_last_item.copy()
        self.new_items = world.new_items
        self.next_release = 0  # index into new_items of the next item to release
        self.young: dict[int, float] = {}  # released items still carrying created_at -> release time
        horizon, n_new = config.horizon, len(self.new_items)
        self.arrived_at = np.full(n_new, -1, dtype=np.int64)
        self.first_click_at = np.full(n_new, -1, dtype=np.int64)
        self.first_shown_at = np.full(n_new, -1, dtype=np.int64)
        self.new_index = np.full(n_items, -1, dtype=np.int64)
        self.new_index[self.new_items] = np.arange(n_new)
        self.clicks = np.zeros(horizon, dtype=np.int64)
        self.expected = np.zeros(horizon)
        self.oracle = np.zeros(horizon)
        self.shown = np.zeros(horizon, dtype=np.int64)
        self.contexts: list[Context] = []
        self.versions = 0

    def run(self) -> SimulationRun:
        config = self.config
        for low in range(0, config.horizon, config.batch):
            self._batch(np.arange(low, min(low + config.batch, config.horizon)))
        return SimulationRun(
            policy=self.policy,
            seed=self.world.seed,
            clicks=self.clicks,
            expected=self.expected,
            oracle=self.oracle,
            shown=self.shown,
            new_items=self.new_items,
            arrived_at=self.arrived_at,
            first_click_at=self.first_click_at,
            first_shown_at=self.first_shown_at,
            versions=self.versions,
            seconds=0.0,
            contexts=self.contexts,
        )

    def _release(self, until: float, visit: int) -> None:
        """Put the items released by ``until`` into the catalogue; let items older than the cold cut-off age out."""
        truth, engine = self.truth, self.engine
        released = False
        while self.next_release < len(self.new_items):
            item = int(self.new_items[self.next_release])
            if truth.release_time[item] > until:
                break
            engine.put_item(
                _item_id(item),
                title=f"Item {item}",
                categories=[f"cluster{truth.item_cluster[item]}"],
                attributes={"created_at": time.time()},
            )
            self.in_catalogue[item] = True
            self.young[item] = float(truth.release_time[item])
            self.arrived_at[self.next_release] = visit
            self.next_release += 1
            released = True
        if not released:  # ageing out goes with a release: the engine's cold mask is rebuilt when the catalogue grows
            return
        cutoff = until - self.config.cold_age_days * SECONDS_PER_DAY
        for item, release in list(self.young.items()):
            if release < cutoff:
                engine.put_item(_item_id(item), title=f"Item {item}", categories=[f"cluster{truth.item_cluster[item]}"])
                del self.young[item]

    def _batch(self, visits: np.ndarray) -> None:
        config, world, engine = self.config, self.world, self.engine
        users = world.visit_users[visits]
        times = world.visit_times[visits]
        self._release(float(times[-1]), int(visits[0]))
        requests = [RecommendRequest(user_id=_user_id(u), k=config.k, explore=self.policy) for u in users.tolist()]
        answers = engine.recommend_many(requests)
        handed = self.tap.take() if self.tap is not None else []
        relevance = config.clicks.relevance(self.truth, users, times, self.last_item[users])
        # what each list could hold when it was served (a user twice in a batch: the first visit's clicks come after)
        eligible_at_serving = np.repeat(self.in_catalogue[None, :], len(users), axis=0)
        for row, user in enumerate(users.tolist()):
            eligible_at_serving[row, list(self.seen[user])] = False
        events: list[Event] = []
        for row, (visit, user, answer) in enumerate(zip(visits.tolist(), users.tolist(), answers, strict=True)):
            shown = np.array([int(item_id[1:]) for item_id, _ in answer.items], dtype=np.int64)
            eligible = eligible_at_serving[row]
            rel = relevance[row]
            self.expected[visit] = list_reward(rel, shown, self.examination)
            self.oracle[visit] = oracle_reward(rel, eligible, self.examination)
            self.shown[visit] = len(shown)
            clicked = self.rng.random(config.k)[: len(shown)] < self.examination[: len(shown)] * rel[shown]
            self.clicks[visit] = int(clicked.sum())
            self._note_new(shown, clicked, visit)
            if self.record:
                self.contexts.append(
                    self._context(
                        handed[row], rel, eligible, [i for i, _ in answer.items], answer.recommendation_id, user, visit
                    )
                )
            stamp = float(times[row])
            for position in np.flatnonzero(clicked).tolist():
                item = int(shown[position])
                events.append(
                    Event(
                        f"sim:{visit}:{position}",
                        _user_id(user),
                        _item_id(item),
                        "click",
                        stamp,
                        recommendation_id=answer.recommendation_id,
                    )
                )
                self.seen[user].add(item)
                self.last_item[user] = item
            if self.rng.random() < config.organic_share:
                item = int(world.visit_items[visit])
                events.append(Event(f"sim:{visit}:organic", _user_id(user), _item_id(item), "view", stamp))
                self.seen[user].add(item)
                self.last_item[user] = item
        if events:
            stored = engine.ingest_async(events).result()
            engine.join_rewards(stored.events)
        while self.updater.step():
            pass
        if engine.maybe_swap_model(force=True):
            self.versions += 1

    def _note_new(self, shown: np.ndarray, clicked: np.ndarray, visit: int) -> None:
        index = self.new_index[shown]
        fresh = index >= 0
        for n in index[fresh].tolist():
            if self.first_shown_at[n] < 0:
                self.first_shown_at[n] = visit
        for n in index[fresh & clicked].tolist():
            if self.first_click_at[n] < 0:
                self.first_click_at[n] = visit

    def _context(
        self,
        handed: Candidates,
        relevance: np.ndarray,
        eligible: np.ndarray,
        shown: list[str],
        recommendation_id: str,
        user: int,
        visit: int,
    ) -> Context:
        """The visit's context in the engine's item indices: what the policy was handed, eligible and cold filled in
        (cold as the engine reads it: unknown to the serving model, or carrying ``created_at``)."""
        state = self.engine.state
        truth_of_state = np.array([int(name[1:]) for name in state.item_ids], dtype=np.int64)
        n = len(truth_of_state)
        cold = np.ones(n, dtype=bool)
        serving = self.engine.serving
        if serving is not None:
            known = serving.model_to_state
            cold[known[known < n]] = False
        cold[state.item_indices([_item_id(item) for item in self.young])] = True
        return Context(
            user_id=_user_id(user),
            time=float(self.world.visit_times[visit]),
            candidates=Candidates(handed.items, handed.scores, eligible=eligible[truth_of_state], cold=cold),
            relevance=relevance[truth_of_state],
            examination=self.examination,
            shown=state.item_indices(shown),
            recommendation_id=recommendation_id,
            policy=self.policy,
        )
