"""What was shown, and what it earned: impressions and the rewards joined to them.

Every served list is an :class:`Impression`, keyed by the ``recommendation_id`` the answer carries: who (the
stored user id — its pseudonym where ids are pseudonymised — or none for an anonymous session or similar
items), the items by position, their scores and propensities, the model version, and the policy with its
settings. Both event logs store them (SQLite: table ``impressions`` of ``events.db``, written by the log's
writer thread in its group commits; Redis: the stream ``P:impressions``), and erasure deletes a user's.

An event that carries a ``recommendation_id`` and has a reward weight (``reward_weights``) is joined to its
impression by :func:`join_rewards`: a :class:`Reward` names the position of the event's item in the list and
the delay since the list was served; one later than ``window_s`` is stored, marked ``late`` and not counted in
the list's reward. An event whose impression is unknown, or whose item was not in the list, joins nothing
(:class:`JoinReport` counts it). Events are stored in the log either way: rewards are derived from them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = ["Impression", "ImpressionLog", "JoinReport", "Reward", "join_rewards", "list_reward"]

#: Kinds of served list.
IMPRESSION_KINDS = ("user", "session", "similar")


def _number(value: float) -> float | None:
    """JSON has no NaN: an unknown number is null."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Impression:
    """One served list. Positions are 1..len(items); every list is as long as ``items``.

    ``propensities[j]``: P(position j+1 shows this item | the positions above) under the policy;
    ``slot_propensities[j]``: P(position j+1 shows this item), marginal (None where the policy has no closed form);
    ``list_propensities[j]``: P(the item is anywhere in the list) (None where the policy has no closed form);
    ``slate_propensity``: P(the whole ordered list). ``scores`` are None for items drawn outside the model's
    ranking; ``explored[j]``: the greedy list would not have had this item at this position. A list served by an
    experiment's arm names it (``experiment_id``, ``arm``); a *shadow* list (apprentice mode, or an experiment's
    shadow arm) was computed for the same request as the live list ``live_recommendation_id`` and never shown:
    it is logged with its propensities for off-policy evaluation, and no event is joined to it.
    """

    recommendation_id: str
    user_id: str | None  # as stored (pseudonym); None: an anonymous session or similar items
    kind: str  # "user", "session" or "similar"
    items: list[str]
    scores: list[float | None]
    propensities: list[float]
    list_propensities: list[float | None]
    explored: list[bool]
    model_version: str | None
    policy: str
    policy_settings: dict[str, Any]
    served_at: float
    anchor_item: str | None = None  # similar items: the item they are similar to
    fallback: str | None = None
    slot_propensities: list[float | None] = field(default_factory=list)  # P(position j+1 shows it), marginal
    experiment_id: str | None = None  # the experiment whose arm served (or shadowed) this list
    arm: str | None = None
    shadow: bool = False  # computed beside a live list and never shown (apprentice mode): joins no reward
    live_recommendation_id: str | None = None  # a shadow list: the list served instead of it
    # what the policy chose from (the ranked candidates, best first, and their scores; the number of eligible ids
    # where the policy was given them): off-policy evaluation recomputes any policy's choice from them
    candidates: list[str] = field(default_factory=list)
    candidate_scores: list[float | None] = field(default_factory=list)
    n_eligible: int | None = None
    # per item, the explanation served with it (liverec.explain.describe), when the request asked (explain=true)
    explanations: list[dict[str, Any]] | None = None
    # the re-ranking applied to the candidates before the policy (liverec.rerank): its name, λ and candidate count;
    # None: not re-ranked (λ = 0 is recorded, and leaves the list as it was)
    rerank: str | None = None
    rerank_lambda: float | None = None
    rerank_candidates: int | None = None

    @property
    def slate_propensity(self) -> float:
        return float(math.prod(self.propensities))

    def to_json(self) -> dict[str, Any]:
        return {
            "recommendation_id": self.recommendation_id,
            "user_id": self.user_id,
            "kind": self.kind,
            "items": list(self.items),
            "positions": list(range(1, len(self.items) + 1)),
            "scores": [None if s is None else _number(s) for s in self.scores],
            "propensities": list(self.propensities),
            "slot_propensities": [None if p is None else _number(p) for p in self.slot_propensities],
            "list_propensities": [None if p is None else _number(p) for p in self.list_propensities],
            "slate_propensity": self.slate_propensity,
            "explored": list(self.explored),
            "model_version": self.model_version,
            "policy": self.policy,
            "policy_settings": dict(self.policy_settings),
            "served_at": self.served_at,
            "anchor_item": self.anchor_item,
            "fallback": self.fallback,
            # written only when set: a list outside any experiment or shadow is stored as before
            **({"experiment_id": self.experiment_id, "arm": self.arm} if self.experiment_id is not None else {}),
            **({"shadow": True, "live_recommendation_id": self.live_recommendation_id} if self.shadow else {}),
            **(
                {
                    "candidates": list(self.candidates),
                    "candidate_scores": [None if s is None else _number(s) for s in self.candidate_scores],
                    "n_eligible": self.n_eligible,
                }
                if self.candidates
                else {}
            ),
            **({"explanations": list(self.explanations)} if self.explanations is not None else {}),
            **(
                {
                    "rerank": self.rerank,
                    "rerank_lambda": self.rerank_lambda,
                    "rerank_candidates": self.rerank_candidates,
                }
                if self.rerank is not None
                else {}
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Impression:
        names = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class Reward:
    """One event joined to the list it answered: its item's position (1-based), reward weight, delay in
    seconds (event time minus serving time) and whether it came after the window."""

    recommendation_id: str
    item_id: str
    type: str
    position: int
    reward: float
    delay_s: float
    late: bool
    offset: int  # the event's log offset (the event itself stays in the log)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reward:
        return cls(**data)


@dataclass
class JoinReport:
    """What :func:`join_rewards` did with a batch of events."""

    rewards: list[Reward] = field(default_factory=list)
    unjoined: dict[str, int] = field(default_factory=dict)  # reason ("unknown", "item") -> events
    late: int = 0


class _EventLike(Protocol):
    @property
    def item_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def recommendation_id(self) -> str | None: ...
    @property
    def offset(self) -> int: ...


def join_rewards(
    events: Iterable[_EventLike],
    impressions: Mapping[str, Impression],
    weights: Mapping[str, float],
    window_s: float,
) -> JoinReport:
    """Join each rewarded event (a ``recommendation_id`` and a type in ``weights``) to its impression.

    ``impressions``: the known ones by id. An event whose impression is missing counts as ``unknown``, one whose
    item is not in the list as ``item``; a join later than ``window_s`` is kept with ``late`` set.
    """
    report = JoinReport()
    for event in events:
        rid = event.recommendation_id
        if rid is None or event.type not in weights:
            continue
        impression = impressions.get(rid)
        if impression is None or impression.shadow:  # a shadow list was never shown: nothing can answer it
            report.unjoined["unknown"] = report.unjoined.get("unknown", 0) + 1
            continue
        try:
            position = impression.items.index(event.item_id) + 1
        except ValueError:
            report.unjoined["item"] = report.unjoined.get("item", 0) + 1
            continue
        delay = float(event.timestamp) - impression.served_at
        late = delay > window_s
        report.late += late
        report.rewards.append(
            Reward(rid, event.item_id, event.type, position, float(weights[event.type]), delay, late, event.offset)
        )
    return report


def list_reward(impression: Impression, rewards: Sequence[Reward]) -> dict[str, Any]:
    """The list's reward (the sum over in-window rewards) and each position's."""
    per_position = [0.0] * len(impression.items)
    for reward in rewards:
        if not reward.late and 1 <= reward.position <= len(per_position):
            per_position[reward.position - 1] += reward.reward
    return {"reward": sum(per_position), "position_rewards": per_position}


class ImpressionLog(Protocol):
    """The impression side of an event log (both logs implement it).

    Writes are asynchronous: :meth:`log_impressions` queues the lists and returns (serving does not wait for a
    sync); they are committed with the log's next group commit (SQLite) or pipeline (Redis), in order with the
    appends queued after them. :meth:`flush` waits until everything queued so far is stored.
    """

    def log_impressions(self, impressions: Sequence[Impression]) -> None: ...
    def log_rewards(self, rewards: Sequence[Reward]) -> None: ...
    def get_impressions(self, recommendation_ids: Sequence[str]) -> dict[str, Impression]: ...
    def get_rewards(self, recommendation_id: str) -> list[Reward]: ...
    def count_impressions(self) -> int: ...
    def iter_impressions(
        self, served_after: float | None = None, batch: int = 10_000
    ) -> Iterator[list[Impression]]: ...
    def get_rewards_many(self, recommendation_ids: Sequence[str]) -> dict[str, list[Reward]]: ...
    def flush(self) -> None: ...
