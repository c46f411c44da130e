"""The engine behind the HTTP API: event log, state, model registry and the serving model, wired up.

No HTTP here (FastAPI lives in ``serving.app``): the engine is what a route calls, and what tests and
benchmarks drive in-process.

Recommending for a user: the state gives the user's recent sequence and seen set; the catalogue
gives the allowed-item mask (available, category include/exclude, not seen); the serving model turns
the sequence into scores (or, for vector models such as SASRec, a user vector searched in a
:class:`~liverec.retrieval.VectorIndex`), restricted to the mask. A user with no usable history gets
time-decayed popularity, and the answer says so. If the model cannot fill k slots (filters, items it
has never seen), popularity fills the rest, so a filter never leaves fewer than k results when k
eligible items exist.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from liverec.backends import Backend, open_backend
from liverec.backends.erasure import ErasureReport, RetentionReport
from liverec.data.interactions import Histories
from liverec.events.impressions import Impression, JoinReport, join_rewards, list_reward
from liverec.events.log import AppendResult, EventLog, StoredEvent
from liverec.events.schema import Event, EventConfig
from liverec.experiments import Arm, Experiment, ExperimentConflict, ExperimentStore, ReportBuilder
from liverec.explain import attribute, describe
from liverec.policies import Candidates, ExploreConfig, Policy, Slate, create_policy
from liverec.registry import LoadedModel
from liverec.rerank import MMR, RERANKERS, RerankCatalogue, create_reranker
from liverec.retrieval import AllowedItems, AnnKind, VectorIndex, exact_recall, limit_threads, top_k_allowed
from liverec.settings import RERANK_DEFAULT_LAMBDA, Settings
from liverec.state.base import StateStore

logger = logging.getLogger(__name__)

__all__ = ["Engine", "RecommendRequest", "Recommendation", "RerankSpec", "ServingModel", "resolve_rerank"]

#: What a deterministic policy is handed as its generator (it draws nothing from it).
_NO_DRAWS = np.random.default_rng(0)


@dataclass(frozen=True)
class Recommendation:
    items: list[tuple[str, float | None]]  # score None: an item drawn outside the model's ranking (exploration)
    model_version: str | None
    recommendation_id: str
    fallback: str | None = None  # "popularity" when the model could not personalise this answer
    reason: str | None = None
    filled: int = 0  # slots the model left empty and popularity filled
    history_length: int = 0
    explored: tuple[bool, ...] = ()  # per item: the greedy list would not have had it in this slot
    impression: Impression | None = field(default=None, compare=False, repr=False)  # what is logged of it
    explanations: tuple[dict[str, Any], ...] | None = None  # per item, when the request asked (explain=true)

    def to_json(self) -> dict[str, Any]:
        items: list[dict[str, Any]] = [{"item_id": i, "score": s} for i, s in self.items]
        if self.explanations is not None:
            for entry, explanation in zip(items, self.explanations, strict=True):
                entry["explanation"] = explanation
        for entry, explored in zip(items, self.explored, strict=False):
            if explored and self.explanations is None:
                entry["explanation"] = {"kind": "explore"}
        return {
            "items": items,
            "model_version": self.model_version,
            "recommendation_id": self.recommendation_id,
            "fallback": self.fallback,
            "reason": self.reason,
            "filled_by_popularity": self.filled,
            "history_length": self.history_length,
        }


@dataclass(frozen=True)
class RecommendRequest:
    """One recommendation request (the arguments of :meth:`Engine.recommend`)."""

    user_id: str | None = None  # a known user, or None for an anonymous session of ``items``
    items: Sequence[str] | None = None
    k: int = 10
    exclude_seen: bool = True
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    explore: str | None = None  # the exploration policy (None: the ``explore`` setting)
    explain: bool = False  # explain each item (liverec.explain); nothing is computed for it otherwise
    rerank: str | None = None  # the re-ranker ("none": off; None: the ``rerank`` setting)
    rerank_lambda: float | None = None  # its λ (None: see :func:`resolve_rerank`)


@dataclass(frozen=True)
class RerankSpec:
    """How one list is re-ranked (:mod:`liverec.rerank`): the re-ranker, its λ and how many of the model's top
    eligible items it chooses from. λ = 0 leaves the list exactly as it was (and is recorded all the same)."""

    name: str
    strength: float
    candidates: int

    @property
    def active(self) -> bool:
        return self.strength > 0.0

    def fields(self) -> dict[str, Any]:
        """What the list's impression records of it."""
        return {"rerank": self.name, "rerank_lambda": self.strength, "rerank_candidates": self.candidates}


def resolve_rerank(settings: Settings, name: str | None, strength: float | None) -> RerankSpec | None:
    """The re-ranking a request (or an experiment arm) asks for; None for none.

    ``name``: a re-ranker, ``"none"``, or None for the ``rerank`` setting. ``strength`` (λ): None takes the
    ``rerank_lambda`` setting when the re-ranker is the ``rerank`` setting's, else the re-ranker's
    :data:`~liverec.settings.RERANK_DEFAULT_LAMBDA`. ValueError (one line, starting with the field at fault) for an
    unknown name or a λ outside the re-ranker's range; a λ with no re-ranker to apply it to is ignored.
    """
    chosen = settings.rerank if name is None else (None if name == "none" else name)
    if chosen is None:  # none named and none set (or rerank=none): not re-ranked, whatever λ comes with it
        return None
    if chosen not in RERANKERS:
        raise ValueError(f"rerank: expected one of none, {', '.join(sorted(RERANKERS))}, got {chosen!r}")
    if strength is None:
        own = chosen == settings.rerank and settings.rerank_lambda is not None
        strength = settings.rerank_lambda if own else RERANK_DEFAULT_LAMBDA[chosen]
    try:
        RERANKERS[chosen].check_strength(float(strength))  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ValueError(f"rerank_lambda: {error}") from None
    return RerankSpec(chosen, float(strength), settings.rerank_candidates)  # type: ignore[arg-type]


@dataclass
class _Draft:
    """A request on its way through :meth:`Engine.recommend_many`."""

    request: RecommendRequest
    history: np.ndarray  # state item indices, oldest first
    allowed: AllowedItems  # over state items
    fallback: str | None = None
    reason: str | None = None
    model_history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the model's answer
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


@dataclass
class _Job:
    """One list computed for a request: the live answer, or a shadow list (apprentice mode, an experiment's shadow
    arm) computed beside it and only logged."""

    index: int  # the request's position in the batch
    serving: ServingModel | None
    policy: Policy
    draft: _Draft  # the request bound to ``serving`` (its model history, or why it falls back)
    experiment_id: str | None = None
    arm: str | None = None
    shadow: bool = False
    wanted: int = 0  # candidates the policy wants
    rerank: RerankSpec | None = None  # how its candidates are re-ranked before the policy draws
    fetch: int = 0  # candidates asked of the model: ``wanted``, or the re-ranker's when it is more
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the model's answer
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    user_vector: np.ndarray | None = None  # the model's query vector (kept only for the cold policy's estimates)


class ServingModel:
    """A registered model bound to the state's item indices (model order ↔ state order)."""

    def __init__(
        self,
        loaded: LoadedModel,
        state: StateStore,
        ann_threshold: int,
        compact_threshold: int | None = None,
        ann_kind: AnnKind = "ivf",
        hnsw_ef_search: int = 64,
        build_in_background: bool = False,
        previous: ServingModel | None = None,
    ) -> None:
        """``build_in_background``: when the catalogue is large enough for the approximate index, serve from the
        exact one at once and build the graph in a daemon thread, which swaps it in when done — an HNSW build takes
        tens of seconds at a few hundred thousand items (docs/results.md), which must hold up neither a promotion
        request nor the model watch. Nothing writes to a serving model's index after it is built, so swapping the
        reference is safe for concurrent searches. ``previous``: the model served until now; where its items are
        the first of this version's and it has an HNSW graph, the graph is carried over
        (:meth:`VectorIndex.carried`: seconds, where a build takes minutes at a million items) unless its check
        says a fresh build would find more."""
        self.version = loaded.version
        self.model = loaded.model
        self.item_ids = loaded.item_ids
        self.manifest = loaded.manifest
        self.index_carried = False  # True once the approximate index is the previous version's graph, carried
        self.model_to_state = state.items_for(loaded.item_ids)
        self._state_to_model = np.full(0, -1, dtype=np.int64)
        self._identity = bool(np.array_equal(self.model_to_state, np.arange(len(self.model_to_state))))
        self.index: VectorIndex | None = None
        self.ann_ready = threading.Event()  # set once the index is the one the settings ask for
        if self.model.provides_vectors:
            vectors = self.model.item_vectors()

            def build(threshold: int) -> VectorIndex:
                return VectorIndex(
                    vectors,
                    ann_threshold=threshold,
                    compact_threshold=compact_threshold,
                    ann_kind=ann_kind,
                    hnsw_ef_search=hnsw_ef_search,
                )

            def build_approximate() -> VectorIndex:
                return self._succeed(previous, vectors, state, lambda: build(ann_threshold))

            if build_in_background and len(vectors) >= ann_threshold:
                self.index = build(len(vectors) + 1)  # exact (or float16 compact) until the graph is ready

                def finish() -> None:
                    try:
                        self.index = build_approximate()
                        logger.info("approximate index ready", extra={"version": self.version})
                    except Exception:  # serving goes on with the exact index
                        logger.exception("building the approximate index failed", extra={"version": self.version})
                    finally:
                        self.ann_ready.set()

                threading.Thread(target=finish, name="liverec-ann-build", daemon=True).start()
            else:
                self.index = build_approximate() if len(vectors) >= ann_threshold else build(ann_threshold)
                self.ann_ready.set()
        else:
            self.ann_ready.set()

    def _succeed(
        self, previous: ServingModel | None, vectors: np.ndarray, state: StateStore, build: Callable[[], VectorIndex]
    ) -> VectorIndex:
        """The approximate index of this version: ``previous``'s graph carried over where this version continues
        its item order and the check keeps it (:meth:`VectorIndex.succeed`), else ``build()``; checked on the
        query vectors of up to 128 stored users' histories under this model."""
        started = time.perf_counter()
        if previous is not None and previous.index is not None and previous.index.ann_kind == "hnsw":
            known = previous.item_ids
            if len(known) <= len(self.item_ids) and self.item_ids[: len(known)] == known:
                index = VectorIndex.succeed(previous.index, vectors, queries=self._check_queries(state))
                self.index_carried = index.provenance == "carried"
                logger.info(
                    "approximate index " + ("carried over" if self.index_carried else "built"),
                    extra={
                        "version": self.version,
                        "previous": previous.version,
                        "check_recall": index.carried_recall if self.index_carried else index.built_recall,
                        "seconds": round(time.perf_counter() - started, 3),
                    },
                )
                return index
        index = build()
        if index.ann_kind == "hnsw":  # the standard a carried successor is held to (only a graph is carried)
            queries = self._check_queries(state)
            if queries is not None:
                index.built_recall = exact_recall(index, queries)
        return index

    def _check_queries(self, state: StateStore, n_users: int = 128) -> np.ndarray | None:
        """Query vectors of up to ``n_users`` stored users' histories under this model (None without any)."""
        histories = [self.to_model(state.history(user)) for user in state.find_users("", n_users)]
        histories = [history for history in histories if len(history)]
        if not histories:
            return None
        return np.asarray(self.model.user_vectors(Histories.from_lists([h.tolist() for h in histories])))

    def to_model(self, state_items: np.ndarray) -> np.ndarray:
        """Model ids of state item indices; items the model does not know are dropped."""
        if self._identity:
            return state_items[state_items < len(self.model_to_state)]
        if len(self._state_to_model) <= int(state_items.max(initial=-1)):
            mapping = np.full(int(self.model_to_state.max(initial=-1)) + 1, -1, dtype=np.int64)
            mapping[self.model_to_state] = np.arange(len(self.model_to_state))
            self._state_to_model = mapping
        inside = state_items[state_items < len(self._state_to_model)]
        mapped = self._state_to_model[inside]
        return mapped[mapped >= 0]

    def allowed(self, allowed_state: AllowedItems) -> AllowedItems:
        """The state's allowed items in this model's item ids."""
        if self._identity:
            return allowed_state.prefix(len(self.model_to_state))
        return AllowedItems.from_mask(allowed_state.mask[self.model_to_state])

    def recommend(
        self, histories: Sequence[np.ndarray], ks: Sequence[int], allowed_states: Sequence[AllowedItems]
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
        """Top-``ks[r]`` state item indices for each model-id history, within ``allowed_states[r]``, and the
        histories' query vectors (``[rows, dim]``; None for a model that scores without vectors).

        The model runs once for all the histories (one batched pass costs much less per history than one
        pass each: docs/results.md). The rows asking for the same ``k`` are searched in one call with a filter
        per row (:meth:`VectorIndex.search`), which answers each row as it would alone.
        """
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        batch = Histories(
            np.full(len(histories), -1), np.concatenate([[0], np.cumsum(lengths)]), np.concatenate(histories)
        )
        users = None
        found: list[tuple[np.ndarray, np.ndarray]] = []
        if self.index is not None:
            users = self.model.user_vectors(batch)
            found = [(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))] * len(histories)
            groups: dict[int, list[int]] = {}
            for row, (k, _) in enumerate(zip(ks, allowed_states, strict=True)):
                groups.setdefault(k, []).append(row)
            for k, rows in groups.items():
                ids, top = self.index.search(users[rows], k, [self.allowed(allowed_states[row]) for row in rows])
                for position, row in enumerate(rows):
                    found[row] = ids[position], top[position]
        else:
            scores = self.model.score(batch)
            for row, (k, allowed) in enumerate(zip(ks, allowed_states, strict=True)):
                ids, top = top_k_allowed(scores[row : row + 1], k, self.allowed(allowed).mask)
                found.append((ids[0], top[0]))
        answers = []
        for ids, top in found:
            valid = ids >= 0
            answers.append((self.model_to_state[ids[valid]], top[valid]))
        return answers, users

    def similar(self, item: int, k: int, allowed_state: AllowedItems) -> tuple[np.ndarray, np.ndarray]:
        """Items close to model item ``item``: cosine of item vectors, or the model's next-item scores."""
        allowed = self.allowed(allowed_state).mask.copy()
        allowed[item] = False
        if self.index is not None:
            vectors = self.model.item_vectors()
            norms = np.linalg.norm(vectors, axis=1) + 1e-12
            scores = (vectors @ vectors[item]) / (norms * norms[item])
        else:
            scores = self.model.score(Histories.from_lists([[item]]))[0]
        ids, top = top_k_allowed(scores.astype(np.float32), k, allowed)
        valid = ids >= 0
        return self.model_to_state[ids[valid]], top[valid]


class Engine:
    """Owns the event log, the state, the model registry and the serving model of one deployment.

    Where the log and the state live is the backend's business (the ``backend`` setting; see
    :mod:`liverec.backends`): the embedded one keeps the state in this process and snapshots it, the Redis one
    shares it with other replicas and the workers, and announces promotions as well as the registry's poll.
    """

    def __init__(self, settings: Settings, *, background: bool = True, backend: Backend | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(settings.torch_threads)
        # NumPy's BLAS and FAISS's OpenMP get the same thread budget as torch (see limit_threads)
        limit_threads(settings.torch_threads)
        self.event_config = EventConfig(
            event_types=dict(settings.event_types),
            max_batch=settings.max_batch,
            max_context_bytes=settings.max_context_bytes,
            max_body_bytes=settings.max_body_bytes,
            max_future_skew_s=settings.max_future_skew_s,
        )
        self.explore_config = ExploreConfig(
            epsilon=settings.explore_epsilon,
            temperature=settings.explore_temperature,
            candidates=settings.explore_candidates,
            cold_age_s=settings.explore_cold_age_s,
            cold_weight=settings.explore_cold_weight,
        )
        self._policies: dict[str, Policy] = {}
        self.default_policy = self.policy(settings.explore)
        self._draws = itertools.count()  # the n-th exploring list draws from generator (explore_seed, n)
        self._shadow_draws = itertools.count()  # shadow lists draw apart: live lists are the same with or without
        self._cold_cache: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
        self._centroid_cache: tuple[RerankCatalogue, np.ndarray, np.ndarray] | None = None
        self._rerank_catalogues: dict[tuple[int, int], tuple[float, RerankCatalogue]] = {}
        self.default_rerank = resolve_rerank(settings, None, None)  # what a request that names none gets
        # experiments and apprentice mode: arms' policies, model versions besides the served one (bounded, LRU)
        self._arm_policies: dict[tuple[str, str], Policy] = {}
        self._arm_models: OrderedDict[str, ServingModel] = OrderedDict()
        self._arm_models_lock = threading.Lock()
        self._arm_models_failed: dict[str, float] = {}  # version -> when its load failed (retried a minute later)
        self._serving_policy_seen: dict[str, Any] | None = None
        self.apprentice: Arm | None = None  # the candidate of apprentice mode (settings apprentice_*), a shadow
        if settings.apprentice_policy is not None or settings.apprentice_model_version is not None:
            self.apprentice = Arm(
                "apprentice",
                model_version=settings.apprentice_model_version,
                policy=settings.apprentice_policy,
                policy_settings=dict(settings.apprentice_policy_settings),
                shadow=True,
            )
        self._own_backend = backend is None
        self.backend = backend if backend is not None else open_backend(settings)
        self.state_config = self.backend.state_config
        self._serving: ServingModel | None = None
        self._model_stamp = -1.0
        self._swap_lock = threading.Lock()
        self._background = background  # background threads: the model watch, snapshots, approximate-index builds
        log: EventLog | None = None
        try:
            self.state: StateStore = self.backend.open_state()
            # the log applies each commit to the state in its writer, before the append returns
            self.log: EventLog = (log := self.backend.open_log(on_commit=self.state.apply))
            self.registry = self.backend.open_registry()
            self.experiments: ExperimentStore = self.backend.open_experiments()
            self.maybe_swap_model()
            self._follow_serving_policy()
        except BaseException:  # a failed start (a corrupt model, say) leaves no writer or connection open
            if log is not None:
                log.close()
            if self._own_backend:
                self.backend.close()
            raise
        self._erasure_epoch = self.log.erasure_epoch()  # the last erasure this engine's model and state follow
        self._erasure_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Callable[[], None] | None = None
        if background:
            self._start(self.maybe_swap_model, settings.model_poll_interval_s, "liverec-model-watch")
            announcer = self.registry.announcer
            if announcer is not None:
                self._unsubscribe = announcer.subscribe(self._announced)
            self._start(self._snapshot_if_changed, settings.snapshot_interval_s, "liverec-snapshot")
            self._start(self.follow_erasures, min(settings.model_poll_interval_s, 1.0), "liverec-erasure-watch")
            if settings.retention_days is not None and self.backend.retention_by_server:
                self._start(self.run_retention, settings.retention_interval_s, "liverec-retention", at_once=True)

    def _start(self, work: Callable[[], Any], interval: float, name: str, *, at_once: bool = False) -> None:
        def loop() -> None:
            if at_once and not self._stop.is_set():
                try:
                    work()
                except Exception:
                    logger.exception(f"{name} failed")
            while not self._stop.wait(interval):
                try:
                    work()
                except Exception:  # a background failure is logged, never fatal to serving
                    logger.exception(f"{name} failed")

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- events ----------------------------------------------------------------------------------
    def ingest_async(self, events: Sequence[Event]) -> Future[AppendResult]:
        """Durably append ``events``; the future is done once they are stored and applied to the state."""
        return self.log.append_async(list(events))

    def join_rewards(self, events: Sequence[StoredEvent]) -> JoinReport:
        """Join the stored events that name a ``recommendation_id`` to their impressions and store the rewards
        (``reward_weights``, ``reward_window_s``); returns once they are stored. What could not be joined is
        counted in the report (the events themselves are in the log already)."""
        weights = self.settings.reward_weights
        rewarded = [event for event in events if event.recommendation_id is not None and event.type in weights]
        if not rewarded:
            return JoinReport()
        wanted = {str(event.recommendation_id) for event in rewarded}
        impressions = self.log.get_impressions(sorted(wanted))
        if len(impressions) < len(wanted):  # a list served here may still be on its way to the log: wait for it once
            self.log.flush()
            impressions |= self.log.get_impressions(sorted(wanted - impressions.keys()))
        report = join_rewards(rewarded, impressions, weights, self.settings.reward_window_s)
        if report.rewards:  # stored before the events are acknowledged: a reader after the answer sees them
            self.log.log_rewards(report.rewards)
            self.log.flush()
        return report

    def impression(self, recommendation_id: str) -> dict[str, Any] | None:
        """A served list as logged, with its joined rewards (None when unknown: never served, or erased)."""
        found = self.log.get_impressions([recommendation_id]).get(recommendation_id)
        if found is None:  # served a moment ago, it may still be on its way to the log: wait for it once
            self.log.flush()
            found = self.log.get_impressions([recommendation_id]).get(recommendation_id)
        if found is None:
            return None
        rewards = self.log.get_rewards(recommendation_id)
        return {
            **found.to_json(),
            **list_reward(found, rewards),
            "rewards": [reward.to_json() for reward in rewards],
        }

    # -- exploration -----------------------------------------------------------------------------
    def policy(self, name: str | None) -> Policy:
        """The exploration policy called ``name`` (None: the deployment's), built once."""
        if name is None:
            return self.default_policy
        policy = self._policies.get(name)
        if policy is None:
            policy = self._policies[name] = create_policy(name, self.explore_config)
        return policy

    def _follow_serving_policy(self) -> None:
        """Make the policy a promoted experiment arm left (persisted in the experiment store, re-read at most once a
        second) the default; without one, the ``explore`` setting's."""
        persisted = self.experiments.serving_policy()
        if persisted == self._serving_policy_seen:
            return
        if persisted is None:
            self.default_policy = self.policy(self.settings.explore)
        else:
            settings = persisted.get("policy_settings") or {}
            config = dataclasses.replace(self.explore_config, **settings) if settings else self.explore_config
            self.default_policy = create_policy(str(persisted["policy"]), config)
            logger.info("serving policy", extra={"policy": self.default_policy.name, "settings": settings})
        self._arm_policies.clear()  # arms without a policy of their own follow the default
        self._serving_policy_seen = persisted

    def _rng(self, shadow: bool = False) -> np.random.Generator:
        """One generator per exploring list: seeded from (``explore_seed``, its number) when a seed is set; shadow
        lists from (``explore_seed``, their number, 1), so that live lists draw the same with or without them."""
        seed = self.settings.explore_seed
        if shadow:
            return np.random.default_rng(None if seed is None else [seed, next(self._shadow_draws), 1])
        draw = next(self._draws)
        return np.random.default_rng(None if seed is None else [seed, draw])

    def _cold_items(self, serving: ServingModel | None) -> np.ndarray:
        """[n_items] bool: items younger than ``explore_cold_age_s`` (catalogue attribute ``created_at``) or unknown
        to the serving model (new since it was trained). Rebuilt at most once a second."""
        now = time.time()
        n = self.state.n_items
        key = (n, id(serving))
        cached = self._cold_cache.get(key)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        cold = np.ones(n, dtype=bool)
        if serving is not None:
            known = serving.model_to_state
            cold[known[known < n]] = False
        cutoff = now - self.settings.explore_cold_age_s
        for index, record in list(self.state.catalogue.metadata.items()):
            created = (record.get("attributes") or {}).get("created_at")
            if index < n and isinstance(created, int | float) and math.isfinite(created) and created >= cutoff:
                cold[index] = True
        if len(self._cold_cache) >= 8:  # one per model in use (experiment arms), a few at most
            self._cold_cache.clear()
        self._cold_cache[key] = (now, cold)
        return cold

    def _centroids(self, serving: ServingModel, catalogue: RerankCatalogue) -> tuple[np.ndarray, np.ndarray]:
        """For the cold estimates: which state items the serving model knows ([n] bool) and each category's
        centroid, the mean vector of its known items ([categories, dim]; NaN rows for a category with none).
        Computed once per re-ranking catalogue (rebuilt at most once a second), not on every list."""
        cached = self._centroid_cache
        if cached is not None and cached[0] is catalogue:
            return cached[1], cached[2]
        vectors, categories = catalogue.vectors, catalogue.categories
        if vectors is None:
            raise ValueError("_centroids: the catalogue carries no item vectors")
        n = len(vectors)
        known = np.zeros(n, dtype=bool)
        known[serving.model_to_state[serving.model_to_state < n]] = True
        centroids = np.zeros((0, vectors.shape[1]))
        if categories is not None and categories.shape[1]:
            members = categories[:n][known]  # [known items, categories]
            counts = np.asarray(members.sum(axis=0)).ravel()
            with np.errstate(divide="ignore", invalid="ignore"):
                centroids = np.asarray(members.T @ vectors[known]) / counts[:, None]
        self._centroid_cache = (catalogue, known, centroids)
        return known, centroids

    # -- re-ranking ------------------------------------------------------------------------------
    def _rerank_catalogue(self, serving: ServingModel | None, vectors: bool) -> RerankCatalogue:
        """What the re-rankers know of the items, aligned with the state's item indices: the catalogue's categories,
        the state's event counts (popularity, and the head / long tail) and, for ``vectors``, the serving model's
        item vectors where it has them (zero for an item it does not know). Rebuilt at most once a second."""
        now = time.monotonic()
        state = self.state
        n = state.n_items
        key = (n, id(serving) if vectors else 0)
        cached = self._rerank_catalogues.get(key)
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        columns: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for index, record in list(state.catalogue.metadata.items()):
            if index < n:
                for category in set(record.get("categories") or ()):
                    rows.append(index)
                    cols.append(columns.setdefault(category, len(columns)))
        categories = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(columns)))
        item_vectors = None
        if vectors and serving is not None and serving.model.provides_vectors:
            model_vectors = np.asarray(serving.model.item_vectors(), dtype=np.float64)
            item_vectors = np.zeros((n, model_vectors.shape[1]))
            known = serving.model_to_state < n
            item_vectors[serving.model_to_state[known]] = model_vectors[known]
        catalogue = RerankCatalogue(categories, state.counts()[:n], item_vectors)
        if len(self._rerank_catalogues) >= 8:  # one or two per model in use, a few at most
            self._rerank_catalogues.clear()
        self._rerank_catalogues[key] = (now, catalogue)
        return catalogue

    def _reranked(
        self,
        spec: RerankSpec | None,
        ids: np.ndarray,
        scores: np.ndarray,
        *,
        k: int,
        wanted: int,
        allowed: AllowedItems,
        history: np.ndarray,
        serving: ServingModel | None,
        fallback: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ranked candidates in the re-ranker's order, ``wanted`` of them: its list of ``k``, then its order of
        the rest (what a policy that draws beyond ``k`` chooses from). ``ids``: the model's eligible candidates, or
        for a ``fallback`` answer the most popular eligible items (``spec.candidates`` of them). Unchanged for no
        re-ranking or λ = 0. A re-ranker only reorders and drops candidates: every filter still holds."""
        if spec is None or not spec.active:
            return ids, scores
        if fallback:
            ids, scores = self._fill_with_popularity(ids, scores, max(wanted, spec.candidates), allowed)
        catalogue = self._rerank_catalogue(serving, vectors=issubclass(RERANKERS[spec.name], MMR))
        reranker = create_reranker(spec.name, spec.strength, catalogue)
        order = reranker.select(ids, scores, wanted, history)
        if wanted > k:  # the list of k first (the long-tail quota depends on k), then the rest in its order
            first = reranker.select(ids, scores, k, history)
            order = np.concatenate([first, order[~np.isin(order, first)]])[:wanted]
        return ids[order], scores[order]

    def _choose(
        self,
        policy: Policy,
        ids: np.ndarray,
        scores: np.ndarray,
        k: int,
        allowed: AllowedItems,
        serving: ServingModel | None,
        shadow: bool = False,
        user_vector: np.ndarray | None = None,
    ) -> Slate:
        """The policy's list from the ranked candidates (greedy: the first k, no generator drawn); ``user_vector``:
        the model's query vector for this list, from which the cold policy estimates the young items' scores."""
        if policy.name == "greedy":
            return policy.select(Candidates(ids, scores), k, _NO_DRAWS)
        cold = self._cold_items(serving) if policy.needs_cold else None
        cold_scores = None
        if cold is not None and serving is not None and user_vector is not None:
            cold_scores = self._cold_scores(serving, user_vector, cold & allowed.mask[: len(cold)])
        candidates = Candidates(
            ids,
            scores,
            eligible=allowed.mask if policy.needs_eligible or policy.needs_cold else None,
            cold=cold,
            cold_scores=cold_scores,
        )
        return policy.select(candidates, k, self._rng(shadow))

    def _cold_scores(self, serving: ServingModel, user_vector: np.ndarray, cold: np.ndarray) -> np.ndarray:
        """[n_items] this user's estimated score of each ``cold`` item (NaN elsewhere and where there is no
        estimate): ``user · item`` for an item the serving model knows; for one it does not know yet, the mean of
        ``user · centroid(c)`` over its categories c, a centroid being the mean vector of the known items in c —
        where a side-feature model would place the item (``SASRec._grow_items``) once an event names it."""
        catalogue = self._rerank_catalogue(serving, vectors=True)
        out = np.full(len(cold), np.nan)
        items = np.flatnonzero(cold)
        vectors, categories = catalogue.vectors, catalogue.categories
        if len(items) == 0 or vectors is None:
            return out
        user = np.asarray(user_vector, dtype=np.float64)
        known, centroids = self._centroids(serving, catalogue)
        n = len(known)
        items = items[items < n]
        mine = items[known[items]]
        out[mine] = vectors[mine] @ user
        unknown = items[~known[items]]
        if len(unknown) and categories is not None and len(centroids):
            centroid_scores = centroids @ user  # NaN for a category with no known item
            per_item = categories[unknown]
            score_sums = per_item @ np.nan_to_num(centroid_scores, nan=0.0)
            usable = per_item @ np.isfinite(centroid_scores).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[unknown] = np.where(usable > 0, score_sums / usable, np.nan)
        return out

    @staticmethod
    def _chosen_from(slate: Slate, names: Sequence[str]) -> dict[str, Any]:
        """What the policy chose from, for off-policy evaluation (``liverec.ope`` recomputes any policy's list
        from it); nothing when that is just the list shown (greedy), which the impression already holds."""
        if len(slate.candidates) <= len(slate.items) and slate.n_eligible is None:
            return {}
        return {
            "candidates": [names[i] for i in slate.candidates.tolist()],
            "candidate_scores": [None if math.isnan(s) else s for s in slate.candidate_scores.tolist()],
            "n_eligible": slate.n_eligible,
        }

    def _answer(
        self,
        policy: Policy,
        slate: Slate,
        *,
        kind: str,
        user_id: str | None,
        model_version: str | None,
        fallback: str | None,
        reason: str | None,
        filled: int,
        history_length: int,
        anchor_item: str | None = None,
        experiment_id: str | None = None,
        arm: str | None = None,
        live_recommendation_id: str | None = None,
        explanations: list[dict[str, Any]] | None = None,
        rerank: RerankSpec | None = None,
    ) -> Recommendation:
        """The answer and the impression logged for it (``live_recommendation_id``: a shadow list, the live list
        it was computed beside; ``explanations``: one per item, when the request asked for them)."""
        names = self.state.item_ids
        items = [names[i] for i in slate.items.tolist()]
        scores: list[float | None] = [None if math.isnan(s) else s for s in slate.scores.tolist()]
        recommendation_id = uuid.uuid4().hex
        impression = Impression(
            recommendation_id=recommendation_id,
            user_id=None if user_id is None else self.backend.user_key(user_id),
            kind=kind,
            items=items,
            scores=scores,
            propensities=slate.propensities.tolist(),
            list_propensities=[None if math.isnan(p) else p for p in slate.list_propensities.tolist()],
            slot_propensities=[None if math.isnan(p) else p for p in slate.slot_propensities.tolist()],
            explored=slate.explored.tolist(),
            model_version=model_version,
            policy=policy.name,
            policy_settings=policy.settings(),
            served_at=time.time(),
            anchor_item=anchor_item,
            fallback=fallback,
            experiment_id=experiment_id,
            arm=arm,
            shadow=live_recommendation_id is not None,
            live_recommendation_id=live_recommendation_id,
            **self._chosen_from(slate, names),
            explanations=explanations,
            **(rerank.fields() if rerank is not None else {}),
        )
        return Recommendation(
            items=list(zip(items, scores, strict=True)),
            model_version=model_version,
            recommendation_id=recommendation_id,
            fallback=fallback,
            reason=reason,
            filled=filled,
            history_length=history_length,
            explored=tuple(slate.explored.tolist()),
            impression=impression,
            explanations=tuple(explanations) if explanations is not None else None,
        )

    # -- catalogue -------------------------------------------------------------------------------
    def put_item(
        self,
        item_id: str,
        *,
        title: str | None = None,
        categories: Sequence[str] = (),
        available: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        record = self.log.put_item(
            item_id, title=title, categories=list(categories), available=available, attributes=attributes
        )
        self.state.put_item(item_id, record)
        return record

    def delete_item(self, item_id: str) -> bool:
        existed = self.log.delete_item(item_id)
        known = self.state.remove_item(item_id)
        return existed or known

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        """The item's record and statistics; None when unknown or deleted (its events may still be counted)."""
        record = self.log.get_item(item_id, include_deleted=True)
        stats = self.state.item_stats(item_id)
        if (record is None and stats is None) or (record is not None and record["deleted"]):
            return None
        out: dict[str, Any] = {"item_id": item_id, "available": True, "title": None, "categories": []}
        out.update(record or {})
        index = self.state.item_index.get(item_id)
        if index is not None:
            out["available"] = bool(self.state.catalogue.available(self.state.n_items)[index])
        out["stats"] = stats or {"count": 0, "popularity": 0.0}
        return out

    def search_items(self, query: str, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` items whose id or title contains ``query`` (case-insensitive): catalogue records
        first, then items known only from events; with an empty ``query``, the most popular items now. Each
        as :meth:`get_item` answers it. Never reads the whole catalogue into a list."""
        if not query:
            popularity = self.state.popularity()
            top = min(limit, len(popularity))
            best = np.argpartition(-popularity, top - 1)[:top] if top else np.zeros(0, dtype=np.int64)
            ids = [self.state.item_ids[i] for i in best[np.argsort(-popularity[best], kind="stable")].tolist()]
        else:
            ids = [record["item_id"] for record in self.log.search_items(query, limit)]
            needle, found = query.casefold(), set(ids)
            for item_id in self.state.item_ids if len(ids) < limit else ():
                # a record would have matched above: only items without one (known from events) are added
                if needle in item_id.casefold() and item_id not in found:
                    if self.log.get_item(item_id, include_deleted=True) is None:
                        ids.append(item_id)
                        if len(ids) >= limit:
                            break
        items = [self.get_item(item_id) for item_id in ids]
        return [item for item in items if item is not None]

    # -- users -----------------------------------------------------------------------------------
    def find_users(self, prefix: str, limit: int) -> list[str]:
        """At most ``limit`` user ids starting with ``prefix``. Where user ids are pseudonymised
        (``pseudonym_secret``) the state holds no id to list: then only ``prefix`` itself, when it is a user."""
        if self.backend.pseudonymise is not None:
            return [prefix] if prefix and self.state.has_user(self.backend.user_key(prefix)) else []
        return self.state.find_users(prefix, limit)

    def user_history(self, user_id: str) -> list[str] | None:
        """The user's recent item ids, oldest first; None for a user the state has never seen."""
        key = self.backend.user_key(user_id)
        history, _ = self.state.user_view(key)
        if len(history) == 0 and not self.state.has_user(key):
            return None
        names = self.state.item_ids
        return [names[i] for i in history.tolist()]

    def forget_user(self, user_id: str) -> ErasureReport:
        """Erase ``user_id`` (a raw id): its events leave the log, its keys the state (and ``state.npz``), its rows
        every model version that keeps them; the serving model is reloaded. Idempotent."""
        with self._erasure_lock:
            report = self.backend.forget_user(user_id, log=self.log, state=self.state)
            self._reload_model()
            if self._erasure_epoch == report.epoch - 1:  # nothing else to follow
                self._erasure_epoch = report.epoch
        return report

    def follow_erasures(self) -> bool:
        """Follow erasures made by another process (``liverec forget-user``, another replica): the in-process
        state drops the users and is snapshotted, and the serving model is reloaded from its rewritten version.
        Polled every second; returns whether there was anything to follow."""
        with self._erasure_lock:
            epoch = self.log.erasure_epoch()
            if epoch == self._erasure_epoch:
                return False
            self.backend.follow_erasures(self.state, self.log)
            self._reload_model()
            self._erasure_epoch = epoch
            return True

    def run_retention(self, now: float | None = None) -> RetentionReport | None:
        """Delete the events older than ``retention_days`` now (the schedule calls it; tests call it directly)."""
        return self.backend.apply_retention(log=self.log, state=self.state, now=now)

    def _reload_model(self) -> None:
        with self._arm_models_lock:  # an erasure rewrote the versions: arms load them again when next used
            self._arm_models.clear()
            self._arm_models_failed.clear()
        try:
            self.maybe_swap_model(force=True, reload=True)
        except Exception:  # the poll retries; an erasure is done whether or not the reload worked
            logger.exception("reloading the serving model after an erasure failed")

    # -- recommendations -------------------------------------------------------------------------
    def _allowed(
        self, include: Sequence[str], exclude: Sequence[str], removed: np.ndarray | Sequence[int] = ()
    ) -> AllowedItems:
        """The available items within the categories, less ``removed`` (state item indices): the catalogue's
        shared base for those categories (:meth:`Catalogue.allowed_base`) and this request's own ids."""
        state = self.state
        return AllowedItems(state.catalogue.allowed_base(state.n_items, include, exclude), removed)

    def recommend(
        self,
        user_id: str | None = None,
        *,
        items: Sequence[str] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        include_categories: Sequence[str] = (),
        exclude_categories: Sequence[str] = (),
        explore: str | None = None,
        explain: bool = False,
        rerank: str | None = None,
        rerank_lambda: float | None = None,
    ) -> Recommendation:
        """Top-k for a known user (``user_id``) or an anonymous session (``items``, oldest first); ``explore``: the
        exploration policy (None: the deployment's); ``explain``: explain each item; ``rerank`` / ``rerank_lambda``:
        the re-ranking (:func:`resolve_rerank`; None: the ``rerank`` setting's)."""
        request = RecommendRequest(
            user_id,
            items,
            k,
            exclude_seen,
            tuple(include_categories),
            tuple(exclude_categories),
            explore,
            explain=explain,
            rerank=rerank,
            rerank_lambda=rerank_lambda,
        )
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Recommendation]:
        """Answer several requests with one pass of the model over their histories (the server batches
        concurrent requests this way); each answer is the one :meth:`recommend` gives alone.

        A user in the running experiment is answered by their arm (its model version and policy) unless the
        request names a policy; the experiment's shadow arms and the apprentice (settings ``apprentice_*``) are
        computed beside the live list and logged as shadow impressions. Each model runs once per batch, for the
        most candidates its lists want (a shorter list takes the head of the ranking: ties go to the lower id,
        so it is the ranking it would have had alone)."""
        serving = self._serving
        self._follow_serving_policy()
        experiment = self.experiments.running()
        live_jobs: list[_Job] = []
        shadow_jobs: list[_Job] = []
        for n, request in enumerate(requests):
            live, shadows = self._jobs(n, self._draft(request, serving), serving, experiment)
            live_jobs.append(live)
            shadow_jobs += shadows
        self._rank(live_jobs + shadow_jobs)
        for job in live_jobs + shadow_jobs:
            draft = job.draft
            job.ids, job.scores = self._reranked(
                job.rerank,
                job.ids,
                job.scores,
                k=draft.request.k,
                wanted=job.wanted,
                allowed=draft.allowed,
                history=draft.history,
                serving=job.serving,
                fallback=draft.fallback is not None or job.serving is None,
            )
        results = [self._list(job) for job in live_jobs]
        impressions: list[Impression | None] = [r.impression for r in results]
        for job in shadow_jobs:
            impressions.append(self._list(job, live=results[job.index]).impression)
        self.log.log_impressions([impression for impression in impressions if impression is not None])
        return results

    def _jobs(
        self, n: int, draft: _Draft, serving: ServingModel | None, experiment: Experiment | None
    ) -> tuple[_Job, list[_Job]]:
        """The live list of request ``n`` and the shadow lists computed beside it."""
        request = draft.request
        rerank = self.default_rerank
        if request.rerank is not None or request.rerank_lambda is not None:
            rerank = resolve_rerank(self.settings, request.rerank, request.rerank_lambda)
        live = _Job(n, serving, self.policy(request.explore), draft, rerank=rerank)
        shadows: list[_Job] = []
        chosen = request.explore is not None or request.rerank is not None or request.rerank_lambda is not None
        if experiment is not None and request.user_id is not None and not chosen:
            arm = experiment.assign(self.backend.user_key(request.user_id))
            assigned = self._arm_job(n, draft, serving, arm, experiment.experiment_id, rerank)
            if assigned is not None:  # an arm whose model cannot be loaded leaves its users the default answer
                live = assigned
                for shadow_arm in experiment.shadow_arms:
                    job = self._arm_job(n, draft, serving, shadow_arm, experiment.experiment_id, rerank)
                    shadows += [job] if job is not None else []
        if self.apprentice is not None:
            job = self._arm_job(n, draft, serving, self.apprentice, None, rerank)
            shadows += [job] if job is not None else []
        return live, shadows

    def _arm_job(
        self,
        n: int,
        draft: _Draft,
        serving: ServingModel | None,
        arm: Arm,
        experiment_id: str | None,
        rerank: RerankSpec | None,
    ) -> _Job | None:
        """Request ``n`` answered the way ``arm`` says (None when its model version cannot be loaded); ``rerank``: the
        request's re-ranking, for an arm that sets none."""
        model = self._model_for(arm.model_version, serving)
        if model is None and arm.model_version is not None:
            return None
        bound = draft if model is serving else self._bind(_Draft(draft.request, draft.history, draft.allowed), model)
        policy = self._arm_policy(experiment_id or "", arm)
        name = arm.name if experiment_id is not None else None
        if arm.rerank is not None:
            rerank = resolve_rerank(self.settings, arm.rerank, arm.rerank_lambda)
        return _Job(n, model, policy, bound, experiment_id=experiment_id, arm=name, shadow=arm.shadow, rerank=rerank)

    def _rank(self, jobs: Sequence[_Job]) -> None:
        """Each job's ranked candidates: one pass per model over the requests that need it, each for the most
        candidates its jobs want; a job takes the head it wants."""
        groups: dict[int, tuple[ServingModel, dict[int, tuple[_Draft, int]]]] = {}
        for job in jobs:
            job.wanted = job.policy.candidates_needed(job.draft.request.k)
            reranked = job.rerank is not None and job.rerank.active
            job.fetch = max(job.wanted, job.rerank.candidates) if job.rerank is not None and reranked else job.wanted
            if job.serving is None or job.draft.fallback is not None:
                continue
            _, rows = groups.setdefault(id(job.serving), (job.serving, {}))
            _, wanted = rows.get(job.index, (job.draft, 0))
            rows[job.index] = (job.draft, max(wanted, job.fetch))
        found: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        for key, (model, rows) in groups.items():
            order = list(rows)
            answers, users = model.recommend(
                [rows[n][0].model_history for n in order],
                [rows[n][1] for n in order],
                [rows[n][0].allowed for n in order],
            )
            found |= {
                (key, n): (*answer, None if users is None else users[row])
                for row, (n, answer) in enumerate(zip(order, answers, strict=True))
            }
        for job in jobs:
            answer = found.get((id(job.serving), job.index)) if job.draft.fallback is None else None
            if answer is not None:
                job.ids, job.scores = answer[0][: job.fetch], answer[1][: job.fetch]
                job.user_vector = answer[2] if job.policy.needs_cold else None

    def _list(self, job: _Job, live: Recommendation | None = None) -> Recommendation:
        """The job's list from its candidates (plus the popularity fill); ``live``: a shadow job's live answer."""
        draft, request = job.draft, job.draft.request
        ids, scores = self._fill_with_popularity(job.ids, job.scores, job.wanted, draft.allowed)
        slate = self._choose(
            job.policy, ids, scores, request.k, draft.allowed, job.serving, job.shadow, job.user_vector
        )
        explanations = None
        if request.explain and not job.shadow:
            explanations = self._explain(
                slate, len(job.ids), job.serving, draft.fallback, draft.reason, draft.model_history
            )
        return self._answer(
            job.policy,
            slate,
            kind="user" if request.user_id is not None else "session",
            user_id=request.user_id,
            model_version=job.serving.version if job.serving is not None else None,
            fallback=draft.fallback,
            reason=draft.reason,
            filled=int((slate.from_candidates >= len(job.ids)).sum()) if draft.fallback is None else 0,
            history_length=len(draft.history),
            experiment_id=job.experiment_id,
            arm=job.arm,
            live_recommendation_id=live.recommendation_id if live is not None else None,
            explanations=explanations,
            rerank=job.rerank,
        )

    def _explain(
        self,
        slate: Slate,
        n_ranked: int,
        serving: ServingModel | None,
        fallback: str | None,
        reason: str | None,
        model_history: np.ndarray,
        anchor: int | None = None,
    ) -> list[dict[str, Any]]:
        """Each listed item's explanation (:func:`liverec.explain.describe`): an explored item ``explore``; every
        other item of a fallback answer ``fallback``; a popularity fill ``new_item`` when the model does not know
        the item, else ``popular``; an item the model ranked ``history``, with the history items of the largest
        attributed weights (:func:`liverec.explain.attribute`: all ranked items in one pass) — or ``popular``
        when no history item moved any score (a model that reads no history). ``anchor``: similar items, whose
        one history item is the anchor (weight: the item's score, its only input)."""
        names = self.state.item_ids
        metadata = self.state.catalogue.metadata

        def because(index: int, weight: float) -> tuple[str, str | None, float]:
            return names[index], (metadata.get(index) or {}).get("title"), weight

        items = slate.items.tolist()
        out: list[dict[str, Any] | None] = [None] * len(items)
        ranked: list[int] = []
        for j, index in enumerate(items):
            if slate.explored[j]:
                out[j] = describe("explore")
            elif fallback is not None or serving is None:
                out[j] = describe("fallback", reason=reason)
            elif not 0 <= slate.from_candidates[j] < n_ranked:
                new = len(serving.to_model(np.array([index], dtype=np.int64))) == 0
                out[j] = describe("new_item" if new else "popular")
            elif anchor is not None:
                out[j] = describe("history", [because(anchor, float(slate.scores[j]))], anchor=True)
            else:
                ranked.append(j)
        if ranked and serving is not None:
            attribution = attribute(serving.model, model_history, serving.to_model(slate.items[ranked]))
            reads_history = bool(attribution.weights.any())
            for row, j in enumerate(ranked):
                top = [because(int(serving.model_to_state[item]), weight) for item, weight in attribution.top(row)]
                out[j] = describe("history", top) if reads_history else describe("popular")
        return [explanation for explanation in out if explanation is not None]

    def _draft(self, request: RecommendRequest, serving: ServingModel | None) -> _Draft:
        """A request's history, allowed items and, when the model cannot answer it, why."""
        state = self.state
        if request.user_id is not None:
            history, seen = state.user_view(self.backend.user_key(request.user_id))
        else:
            history = state.item_indices(list(request.items or []))
            seen = history
        removed = seen if request.exclude_seen else ()
        allowed = self._allowed(request.include_categories, request.exclude_categories, removed)
        return self._bind(_Draft(request, history, allowed), serving)

    def _bind(self, draft: _Draft, serving: ServingModel | None) -> _Draft:
        """``draft`` with the history in ``serving``'s item ids, or the reason it falls back to popularity."""
        if serving is None:
            draft.fallback, draft.reason = "popularity", "no model has been trained yet"
        elif len(draft.history) == 0:
            draft.fallback = "popularity"
            draft.reason = "no history for this user" if draft.request.user_id is not None else "empty session"
        else:
            draft.model_history = serving.to_model(draft.history)
            if len(draft.model_history) == 0:
                draft.fallback = "popularity"
                draft.reason = f"model {serving.version} knows none of the history's items"
        return draft

    def _fill_with_popularity(
        self, ids: np.ndarray, scores: np.ndarray, k: int, allowed: AllowedItems
    ) -> tuple[np.ndarray, np.ndarray]:
        """Append the most popular allowed items not already chosen until there are k (or none is left)."""
        if len(ids) >= k:
            return ids, scores
        remaining = allowed.mask.copy()
        remaining[ids] = False
        extra_ids, extra_scores = top_k_allowed(self.state.popularity(), k - len(ids), remaining)
        keep = extra_ids >= 0
        return np.concatenate([ids, extra_ids[keep]]), np.concatenate([scores, extra_scores[keep].astype(np.float32)])

    def similar(
        self,
        item_id: str,
        k: int = 10,
        explore: str | None = None,
        explain: bool = False,
        *,
        rerank: str | None = None,
        rerank_lambda: float | None = None,
    ) -> Recommendation | None:
        """Items like ``item_id`` (None when the item is unknown); ``explore``: the policy (None: the deployment's);
        ``explain``: explain each item (the anchor item, for the ones the model ranked); ``rerank`` /
        ``rerank_lambda``: the re-ranking (:func:`resolve_rerank`; calibration aims at the anchor's categories)."""
        spec = self.default_rerank
        if rerank is not None or rerank_lambda is not None:
            spec = resolve_rerank(self.settings, rerank, rerank_lambda)
        state = self.state
        state.sync()
        index = state.item_index.get(item_id)
        if index is None:
            return None
        self._follow_serving_policy()
        serving = self._serving
        allowed = self._allowed((), (), [index])
        ids = np.zeros(0, dtype=np.int64)
        scores = np.zeros(0, dtype=np.float32)
        fallback = reason = None
        model_item = serving.to_model(np.array([index])) if serving is not None else np.zeros(0, dtype=np.int64)
        if serving is None:
            fallback, reason = "popularity", "no model has been trained yet"
        elif len(model_item) == 0:
            fallback, reason = "popularity", f"model {serving.version} does not know this item yet"
        policy = self.policy(explore)
        wanted = policy.candidates_needed(k)
        fetch = max(wanted, spec.candidates) if spec is not None and spec.active else wanted
        if serving is not None and fallback is None:
            ids, scores = serving.similar(int(model_item[0]), fetch, allowed)
        ids, scores = self._reranked(
            spec,
            ids,
            scores,
            k=k,
            wanted=wanted,
            allowed=allowed,
            history=np.array([index], dtype=np.int64),
            serving=serving,
            fallback=fallback is not None,
        )
        n_ranked = len(ids)
        ids, scores = self._fill_with_popularity(ids, scores, wanted, allowed)
        slate = self._choose(policy, ids, scores, k, allowed, serving)
        explanations = None
        if explain:
            explanations = self._explain(slate, n_ranked, serving, fallback, reason, model_item, anchor=index)
        answer = self._answer(
            policy,
            slate,
            kind="similar",
            user_id=None,
            model_version=serving.version if serving is not None else None,
            fallback=fallback,
            reason=reason,
            filled=0,
            history_length=0,
            anchor_item=item_id,
            explanations=explanations,
            rerank=spec,
        )
        if answer.impression is not None:
            self.log.log_impressions([answer.impression])
        return answer

    # -- models ----------------------------------------------------------------------------------
    @property
    def serving(self) -> ServingModel | None:
        """The model being served now (swapped as one reference; read it once per request)."""
        return self._serving

    @property
    def model_version(self) -> str | None:
        serving = self._serving
        return serving.version if serving is not None else None

    @property
    def retrieval(self) -> str:
        """How the serving model ranks: ``exact`` / ``exact-float16`` / ``faiss`` (IVF) / ``faiss-hnsw`` (index),
        ``scores`` (full scoring)."""
        serving = self._serving
        if serving is None:
            return "popularity"
        if serving.index is None:
            return "scores"
        if serving.index.is_compact:
            return "exact-float16"
        if serving.index.is_exact:
            return "exact"
        return "faiss-hnsw" if serving.index.ann_kind == "hnsw" else "faiss"

    def maybe_swap_model(self, *, force: bool = False, reload: bool = False) -> bool:
        """Load the promoted version if it changed; the swap is one reference assignment.

        ``force``: read the pointer even if its modification time looks unchanged (an announcement said so);
        ``reload``: load the version even if it is the one served (an erasure rewrote it).
        """
        with self._swap_lock:
            stamp = self.registry.promoted_stamp()
            if stamp == self._model_stamp and not force:
                return False
            version = self.registry.promoted()
            self._model_stamp = stamp
            if version is None or (self._serving is not None and self._serving.version == version and not reload):
                return False
            serving = self._serving_model(version)
            self._serving = serving
            logger.info("serving model", extra={"version": version, "model": serving.model.name})
            return True

    def _serving_model(self, version: str) -> ServingModel:
        """Registered ``version`` bound to the state, with the retrieval the settings ask for (the approximate
        index built in the background when this engine runs background threads)."""
        settings = self.settings
        return ServingModel(
            self.registry.load(version),
            self.state,
            settings.ann_threshold,
            settings.compact_threshold,
            settings.ann_kind,
            settings.hnsw_ef_search,
            build_in_background=self._background,
            previous=self._serving,
        )

    def _model_for(self, version: str | None, serving: ServingModel | None) -> ServingModel | None:
        """The model of an experiment arm or the apprentice: the served one for None (or its own version), else the
        version loaded once and kept among the last ``experiment_model_cache`` used; None when it cannot load."""
        if version is None or (serving is not None and serving.version == version):
            return serving
        with self._arm_models_lock:
            cached = self._arm_models.get(version)
            if cached is not None:
                self._arm_models.move_to_end(version)
                return cached
            if time.monotonic() - self._arm_models_failed.get(version, float("-inf")) < 60.0:
                return None  # not tried again on every request
            try:
                loaded = self._serving_model(version)
            except Exception:
                self._arm_models_failed[version] = time.monotonic()
                logger.exception("loading a model version for an experiment arm failed", extra={"version": version})
                return None
            self._arm_models[version] = loaded
            while len(self._arm_models) > self.settings.experiment_model_cache:
                self._arm_models.popitem(last=False)
            return loaded

    def _arm_policy(self, experiment_id: str, arm: Arm) -> Policy:
        """The policy of an arm (its own, or the default with the arm's settings over it), built once."""
        if arm.policy is None and not arm.policy_settings:
            return self.default_policy
        policy = self._arm_policies.get((experiment_id, arm.name))
        if policy is None:
            base = self.default_policy.config if arm.policy is None else self.explore_config
            policy = create_policy(arm.policy or self.default_policy.name, arm.explore_config(base))
            if len(self._arm_policies) >= 64:
                self._arm_policies.clear()
            self._arm_policies[(experiment_id, arm.name)] = policy
        return policy

    # -- experiments -----------------------------------------------------------------------------
    def create_experiment(self, experiment: Experiment) -> Experiment:
        """Start ``experiment``: every arm's model version is loaded first (``KeyError`` naming an unknown one), then
        it is stored (:class:`~liverec.experiments.ExperimentConflict` when its id is taken or another runs)."""
        serving = self._serving
        for arm in experiment.arms:
            if arm.model_version is not None:
                self.registry.manifest(arm.model_version)  # KeyError for an unknown version
                if self._model_for(arm.model_version, serving) is None:
                    raise RuntimeError(f"arm {arm.name!r}: model version {arm.model_version!r} could not be loaded")
        self.experiments.create(experiment)
        return experiment

    def stop_experiment(self, experiment_id: str) -> Experiment | None:
        """End the assignment of a running experiment (a stopped or promoted one is answered as it is); None when
        unknown."""
        experiment = self.experiments.get(experiment_id)
        if experiment is None or experiment.status != "running":
            return experiment
        stopped = experiment.with_status("stopped")
        self.experiments.replace(experiment, stopped)
        return stopped

    def promote_experiment(self, experiment_id: str, arm_name: str | None = None) -> Experiment | None:
        """Stop the experiment and make an arm's way of answering the default: its model version is promoted in
        the registry, its policy becomes the serving policy (persisted). ``arm_name`` None: the live arm with the
        best reward rate among those better than the control at p < 0.05. None when the experiment is unknown;
        ``LookupError`` for an unknown arm; :class:`~liverec.experiments.ExperimentConflict` when it was promoted
        already or no arm beats the control."""
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            return None
        if experiment.status == "promoted":
            raise ExperimentConflict(f"experiment {experiment_id!r} was promoted already (arm {experiment.winner!r})")
        if arm_name is None:
            arm_name = self._winner(experiment)
        arm = experiment.arm(arm_name)
        if arm is None:
            names = ", ".join(a.name for a in experiment.arms)
            raise LookupError(f"arm {arm_name!r}: experiment {experiment_id!r} has no such arm (arms: {names})")
        promoted = experiment.with_status("promoted", winner=arm.name)
        self.experiments.replace(experiment, promoted)
        if arm.model_version is not None:
            self.registry.promote(arm.model_version, reason=f"experiment {experiment_id} arm {arm.name}")
            self.maybe_swap_model(force=True)
        if arm.policy is not None or arm.policy_settings:
            base = self.default_policy
            config = dataclasses.asdict(arm.explore_config(base.config if arm.policy is None else self.explore_config))
            self.experiments.set_serving_policy(arm.policy or base.name, config)
            self._follow_serving_policy()
        return promoted

    def _winner(self, experiment: Experiment) -> str:
        report = self.experiment_reports([experiment])[0]
        better = [
            arm
            for arm in report["arms"]
            if not arm["shadow"] and arm["p_value"] is not None and arm["p_value"] < 0.05 and arm["difference"] > 0
        ]
        if not better:
            raise ExperimentConflict(
                f"experiment {experiment.experiment_id!r}: no arm beats the control {experiment.control.name!r} at "
                "p < 0.05; name the arm to promote"
            )
        return str(max(better, key=lambda arm: arm["reward_rate"])["name"])

    def experiment_reports(self, experiments: Sequence[Experiment]) -> list[dict[str, Any]]:
        """Each experiment's per-arm figures (:func:`~liverec.experiments.experiment_report`), from one read of the
        impressions served since the oldest of them started and the rewards joined to them."""
        if not experiments:
            return []
        builders = [ReportBuilder(experiment) for experiment in experiments]
        self.log.flush()  # the lists served here a moment ago count
        for batch in self.log.iter_impressions(served_after=min(e.created_at for e in experiments)):
            mine = [impression for impression in batch if any(b.wants(impression) for b in builders)]
            if not mine:
                continue
            rewards = self.log.get_rewards_many([i.recommendation_id for i in mine if not i.shadow])
            for builder in builders:
                builder.add(mine, rewards)
        return [builder.report() for builder in builders]

    def _announced(self, version: str) -> None:
        try:
            self.maybe_swap_model(force=True)
        except Exception:  # the poll retries; a failed load must not kill the subscriber thread
            logger.exception("swap to announced version failed", extra={"version": version})

    # -- persistence -----------------------------------------------------------------------------
    def _snapshot_if_changed(self) -> None:
        self.backend.save_state(self.state, if_changed=True)

    def snapshot(self) -> None:
        """Persist the state where the backend does not persist it by itself (the embedded ``state.npz``)."""
        self.backend.save_state(self.state)

    def ready(self) -> dict[str, Any]:
        """Readiness: a model is loaded and the log accepts writes."""
        return {"model_loaded": self._serving is not None, "log_writable": bool(self.log.writable())}

    def close(self) -> None:
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for thread in self._threads:
            thread.join(timeout=5)
        try:  # an erasure made by another process just before the stop must not outlive it in the last snapshot
            self.follow_erasures()
        except Exception:
            logger.exception("following erasures at shutdown failed")
        self.log.close()  # drains pending appends first
        self.snapshot()
        self.experiments.close()
        if self._own_backend:
            self.backend.close()
