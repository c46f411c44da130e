"""Request and response bodies of the HTTP API (pydantic; what the OpenAPI document shows)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from liverec.events.schema import IdText, json_int
from liverec.experiments import NAME_PATTERN, SHARE_TOLERANCE
from liverec.rerank import RERANKERS

__all__ = [
    "ArmIn",
    "ArmOut",
    "ArmReportOut",
    "BecauseItem",
    "ErasureOut",
    "ErrorOut",
    "EventError",
    "EventErrorsOut",
    "EventsAck",
    "ExperimentIn",
    "ExperimentListOut",
    "ExperimentOut",
    "ExperimentPromotedOut",
    "ExperimentReportOut",
    "Explanation",
    "ExploreName",
    "ImpressionOut",
    "ItemIn",
    "ItemListOut",
    "ItemOut",
    "KeyCreated",
    "KeyIn",
    "KeyOut",
    "PolicySettingsIn",
    "PromoteIn",
    "RecommendationOut",
    "RerankLambda",
    "RerankName",
    "RewardOut",
    "SampleRatioOut",
    "ScoredItem",
    "SessionRequest",
    "ShadowArmIn",
    "StatsOut",
    "UserListOut",
    "UserOut",
]


def _finite_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The value itself when it is JSON without NaN or Infinity (they would be stored as null)."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("must not contain NaN or Infinity") from None
    return value


class ErrorOut(BaseModel):
    """Every 4xx but a validation error: what went wrong, in one sentence."""

    detail: str


class ItemIn(BaseModel):
    """An item of the catalogue as a client sends it (strict types: ``available`` is ``true`` or ``false``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str | None = Field(None, max_length=1000)
    categories: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=100)
    available: bool = True
    attributes: Annotated[dict[str, Any] | None, AfterValidator(_finite_json)] = None


class ItemOut(BaseModel):
    """An item of the catalogue, with what the state counts of it."""

    item_id: str
    title: str | None
    categories: list[str]
    available: bool
    attributes: dict[str, Any] | None = None
    updated_at: float | None = None
    stats: dict[str, float] | None = Field(
        None, description="GET only: count (weighted events) and popularity (time-decayed)"
    )


class EventsAck(BaseModel):
    """What ``POST /v1/events`` answers once the batch is stored (durably, and applied to the state)."""

    received: int
    stored: int = Field(description="new events written")
    duplicates: int = Field(description="events whose event_id was already in the log (stored once)")
    last_offset: int = Field(description="log offset of the last event of this batch")


class EventError(BaseModel):
    index: int = Field(description="the event's position in the batch (NDJSON: line number - 1)")
    field: str
    value: Any = None
    reason: str


class EventErrorsOut(BaseModel):
    """Every problem of a refused batch; no event of it was stored."""

    detail: list[EventError]
    message: str


#: The exploration policies a request may name (``liverec.policies.POLICIES``; a test keeps them equal).
ExploreName = Literal["greedy", "epsilon", "softmax", "cold"]

#: The re-rankers a request may name (``liverec.rerank.RERANKERS`` and ``none``; a test keeps them equal).
RerankName = Literal["none", "mmr", "calibration", "popularity", "long-tail"]
#: A re-ranker's λ: a finite number >= 0; each re-ranker bounds it further (all but popularity at 1), checked
#: with the name (a 422 naming ``rerank_lambda``).
RerankLambda = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
RERANK_DESCRIPTION = (
    "the re-ranker of this list, applied to the eligible candidates before the exploration policy: mmr "
    "(diversity), calibration (the user's category mix), popularity (penalty), long-tail (quota), none (off); "
    "default: the rerank setting"
)
RERANK_LAMBDA_DESCRIPTION = (
    "its strength λ: in [0, 1] (popularity: >= 0); 0 leaves the list as it was, and so does a λ with no re-ranker; "
    "default: the rerank_lambda setting "
    "for the default re-ranker, else the re-ranker's suggested λ (calibration 0.03, long-tail 0.3, mmr 0.5, "
    "popularity 0.3)"
)


class BecauseItem(BaseModel):
    """A history item that drove a recommendation, and how much (``liverec.explain``)."""

    item_id: str
    title: str | None = Field(None, description="the catalogue title (absent when the item has none)")
    weight: float = Field(
        description="its contribution to the item's score: the exact term for ItemKNN and EASE (the weights of "
        "all history items sum to the score), else the score drop when it is removed from the history (occlusion)"
    )


class Explanation(BaseModel):
    """Why an item is in the list. With ``explain=true``, every item has one: ``history`` (ranked from the
    history; ``because`` names the history items that drove it, up to 3, largest weight first), ``popular``
    (ranked by a model that reads no history, or a popularity fill), ``fallback`` (the whole answer fell back
    to popularity), ``new_item`` (a fill the serving model does not know yet), ``explore`` (the policy put it in
    a slot where the greedy list had another item). Without it, only explored items have one, ``kind`` alone."""

    kind: Literal["history", "popular", "fallback", "new_item", "explore"]
    because: list[BecauseItem] | None = Field(None, description="explain=true: the history items that drove it")
    text: str | None = Field(None, description='explain=true: e.g. "Because you interacted with A and B"')


class ScoredItem(BaseModel):
    item_id: str
    score: float | None = Field(description="the model's score; null for an item drawn outside its ranking")
    explanation: Explanation | None = Field(
        None, description="every item with explain=true; otherwise present only for an explored item"
    )


class RecommendationOut(BaseModel):
    """What every recommendation route answers (documentation only: the hot route writes JSON directly)."""

    items: list[ScoredItem]
    model_version: str | None = Field(description="the registry version that ranked, None before any training")
    recommendation_id: str = Field(description="send it back as an event's recommendation_id")
    fallback: str | None = Field(description='"popularity" when the model could not personalise the answer')
    reason: str | None = Field(description="why the fallback was used")
    filled_by_popularity: int = Field(0, description="slots the model left empty and popularity filled")
    history_length: int = Field(0, description="events of the user's recent sequence the answer used")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[IdText] = Field(..., min_length=1, max_length=1000, description="the session's item ids, oldest first")
    k: json_int(ge=1) = 10  # type: ignore[valid-type]
    exclude_seen: bool = True
    include_categories: list[str] = Field(default_factory=list)
    exclude_categories: list[str] = Field(default_factory=list)
    explore: ExploreName | None = Field(None, description="the exploration policy (default: the explore setting)")
    explain: bool = Field(False, description="explain each item (explanation: kind, because, text)")
    rerank: RerankName | None = Field(None, description=RERANK_DESCRIPTION)
    rerank_lambda: RerankLambda | None = Field(None, description=RERANK_LAMBDA_DESCRIPTION)


class RewardOut(BaseModel):
    """One event joined to the list it answered."""

    recommendation_id: str
    item_id: str
    type: str
    position: int = Field(description="the item's position in the list, from 1")
    reward: float = Field(description="the event type's reward (reward_weights)")
    delay_s: float = Field(description="event time minus the time the list was served")
    late: bool = Field(description="later than reward_window_s: kept, not counted in the list's reward")
    offset: int = Field(description="the event's log offset")


class ImpressionOut(BaseModel):
    """A served list as logged, with the rewards joined to it so far."""

    recommendation_id: str
    user_id: str | None = Field(description="the user as stored (a pseudonym where ids are pseudonymised)")
    kind: Literal["user", "session", "similar"]
    items: list[str]
    positions: list[int]
    scores: list[float | None]
    propensities: list[float] = Field(description="P(this slot shows this item | the slots above) under the policy")
    slot_propensities: list[float | None] = Field(
        description="P(this slot shows this item), marginal; null where the policy has no closed form"
    )
    list_propensities: list[float | None] = Field(description="P(the item is in the list); null: no closed form")
    slate_propensity: float = Field(description="P(this whole ordered list): the product of the propensities")
    explored: list[bool]
    model_version: str | None
    policy: str
    policy_settings: dict[str, Any]
    served_at: float = Field(description="Unix seconds")
    anchor_item: str | None = Field(description="similar items: the item they are similar to")
    fallback: str | None
    reward: float = Field(description="the sum of the in-window rewards")
    position_rewards: list[float] = Field(description="in-window reward per position")
    rewards: list[RewardOut]
    experiment_id: str | None = Field(None, description="the experiment whose arm served (or shadowed) this list")
    arm: str | None = Field(None, description="that arm")
    shadow: bool = Field(False, description="computed beside a live list and never shown (apprentice mode)")
    live_recommendation_id: str | None = Field(None, description="a shadow list: the list served instead of it")
    candidates: list[str] | None = Field(
        None, description="what the policy chose from, best first (absent for a greedy list: its items)"
    )
    candidate_scores: list[float | None] | None = Field(None, description="the model's score of each candidate")
    n_eligible: int | None = Field(None, description="eligible items when the policy drew from all of them (ε)")
    explanations: list[Explanation] | None = Field(
        None, description="the explanation served with each item, when the request asked (explain=true)"
    )
    rerank: str | None = Field(None, description="the re-ranker applied before the policy (absent: none)")
    rerank_lambda: float | None = Field(None, description="its λ (0: the list as it was without it)")
    rerank_candidates: int | None = Field(None, description="how many of the model's top items it chose from")


Scope = Literal["ingest", "read", "catalog", "admin"]


class KeyIn(BaseModel):
    """A key to create: its name and scopes."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.@-]{1,64}$", description="a name to revoke it by")
    scopes: list[Scope] = Field(..., min_length=1, max_length=4)


class KeyOut(BaseModel):
    name: str
    key_id: str
    scopes: list[Scope]
    created_at: float


class KeyCreated(KeyOut):
    key: str = Field(
        description="the key: send it as `Authorization: Bearer KEY`; it is not stored and not shown again"
    )


class UserOut(BaseModel):
    """What the state knows of a user (``GET /v1/users/{user_id}``)."""

    user_id: str
    recent_items: list[str] = Field(description="the user's recent item ids, oldest first")


class ErasureOut(BaseModel):
    """What ``DELETE /v1/users/{user_id}`` erased (zero counts when there was nothing left: erasure is idempotent)."""

    user_id: str = Field(description="the user id erased, as given")
    events_deleted: int = Field(description="events deleted from the log")
    state: bool = Field(description="whether the live state knew the user (it no longer does)")
    models_rewritten: list[str] = Field(description="model versions rewritten without the user")
    trained_on: list[str] = Field(description="model versions whose training data held the user's events")
    erased_at: float = Field(description="Unix seconds")
    impressions_deleted: int = Field(0, description="served lists of the user deleted (with their rewards)")


# -- experiments ------------------------------------------------------------------------------------------------
Finite = Annotated[float, Field(allow_inf_nan=False)]
ArmName = Annotated[str, Field(pattern=NAME_PATTERN, description="1-64 letters, digits or _.-")]
ModelVersion = Annotated[
    str, Field(pattern=r"^v[0-9]{1,12}$", description="a registered model version (GET /v1/models), e.g. v0001")
]


class PolicySettingsIn(BaseModel):
    """An arm's exploration settings over the deployment's ``explore_*`` ones (each optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    epsilon: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = Field(
        None, description="epsilon: probability that a slot is replaced"
    )
    temperature: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] | None = Field(
        None, description="softmax: scores are divided by it"
    )
    candidates: json_int(ge=1, le=10_000) | None = Field(  # type: ignore[valid-type]
        None, description="softmax and cold: how many of the model's top items the policy chooses from"
    )
    cold_age_s: Annotated[float, Field(gt=0, le=1e10, allow_inf_nan=False)] | None = Field(
        None, description="cold: items younger than this (seconds) are boosted"
    )
    cold_weight: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = Field(
        None, description="cold: the boost, as a fraction of the candidates' score range"
    )


class ShadowArmIn(BaseModel):
    """A way of answering whose list is computed for each user of the experiment and logged as a shadow
    impression, never shown (apprentice mode): evaluated off-policy, before anyone sees it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: ArmName
    model_version: ModelVersion | None = Field(None, description="default: the version served at each request")
    policy: ExploreName | None = Field(None, description="the exploration policy (default: the deployment's)")
    policy_settings: PolicySettingsIn = PolicySettingsIn.model_validate({})  # pydantic copies a default
    rerank: RerankName | None = Field(
        None, description="the re-ranker of the arm's lists (none: off; default: the rerank setting)"
    )
    rerank_lambda: RerankLambda | None = Field(
        None, description="its λ: in [0, 1] (popularity: >= 0); needs rerank (default: the serving default)"
    )

    @model_validator(mode="after")
    def _rerank_lambda(self) -> ShadowArmIn:
        if self.rerank_lambda is None:
            return self
        if self.rerank is None or self.rerank == "none":
            raise ValueError(f"rerank_lambda: given without a re-ranker; expected rerank with it, got {self.rerank!r}")
        try:
            RERANKERS[self.rerank].check_strength(self.rerank_lambda)
        except ValueError as error:
            raise ValueError(f"rerank_lambda: {error}") from None
        return self


class ArmIn(ShadowArmIn):
    """A live arm: the share of the experiment's users it answers."""

    share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        description="the share of users; the live arms' shares sum to 1"
    )


class ExperimentIn(BaseModel):
    """An experiment to start. The first arm is the control. Two rules a schema cannot state: the shares of
    ``arms`` sum to 1 (within 1e-6), and arm names are unique across ``arms`` and ``shadow_arms``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    experiment_id: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        None, description="1-64 letters, digits or _.- (default: generated); it salts the assignment hash"
    )
    name: str = Field("", max_length=200, description="for people")
    arms: list[ArmIn] = Field(..., min_length=1, max_length=10)
    shadow_arms: list[ShadowArmIn] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _shares_and_names(self) -> ExperimentIn:
        total = math.fsum(arm.share for arm in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            shares = ", ".join(f"{arm.name}={arm.share:g}" for arm in self.arms)
            raise ValueError(f"arms: the shares must sum to 1, got {total:.6g} ({shares})")
        names = [arm.name for arm in [*self.arms, *self.shadow_arms]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"arms: arm names must be unique across arms and shadow_arms; {repeated} repeated")
        return self


class ArmOut(BaseModel):
    name: str
    share: float = Field(description="of the experiment's users (0 for a shadow arm)")
    model_version: str | None = Field(description="null: the version served at each request")
    policy: str | None = Field(description="null: the deployment's default policy")
    policy_settings: dict[str, float]
    shadow: bool
    rerank: str | None = Field(None, description="the arm's re-ranker (absent: the request's)")
    rerank_lambda: float | None = Field(None, description="its λ (null: the serving default)")


class ExperimentOut(BaseModel):
    experiment_id: str
    name: str
    status: Literal["running", "stopped", "promoted"]
    created_at: float = Field(description="Unix seconds")
    stopped_at: float | None = Field(description="Unix seconds; null while running")
    winner: str | None = Field(description="the arm promoted")
    arms: list[ArmOut]


class ArmReportOut(ArmOut):
    impressions: int = Field(description="lists this arm served (a shadow arm: logged)")
    users: int = Field(description="distinct users among them")
    reward: float | None = Field(description="the sum of the lists' in-window rewards (null for a shadow arm)")
    reward_rate: float | None = Field(description="mean reward per impression")
    reward_rate_ci: list[float] | None = Field(description="its 95 % t interval (null below two impressions)")
    difference: float | None = Field(description="reward_rate minus the control's")
    difference_ci: list[float] | None = Field(description="its 95 % Welch interval")
    p_value: float | None = Field(description="two-sided Welch t-test of the difference")


class SampleRatioOut(BaseModel):
    """Chi-square tests of the users (and impressions) per live arm against the shares."""

    users_chi2: float | None
    users_p_value: float | None
    impressions_chi2: float | None
    impressions_p_value: float | None
    alpha: float
    mismatch: bool = Field(description="users_p_value < alpha: the split does not match the shares")


class ExperimentReportOut(ExperimentOut):
    """An experiment and what each arm earned so far."""

    control: str = Field(description="the first arm, which each other arm is compared with")
    test: str = Field(description="the test behind the p-values")
    arms: list[ArmReportOut]  # type: ignore[assignment]
    sample_ratio: SampleRatioOut


class ExperimentListOut(BaseModel):
    experiments: list[ExperimentReportOut]


class PromoteIn(BaseModel):
    """Which arm to promote (default: the live arm with the best reward rate among those better than the control
    at p < 0.05)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    arm: ArmName | None = None


class ExperimentPromotedOut(ExperimentOut):
    serving: str | None = Field(description="the model version served now")
    serving_policy: str = Field(description="the default exploration policy now")


class ItemListOut(BaseModel):
    """Items found by ``GET /v1/items``, each as ``GET /v1/items/{item_id}`` answers it."""

    items: list[ItemOut]


class UserListOut(BaseModel):
    """User ids found by ``GET /v1/users``."""

    user_ids: list[str]
    pseudonymised: bool = Field(
        description="user ids are stored as pseudonyms (pseudonym_secret): only an exact id can be found"
    )


class StatsOut(BaseModel):
    """The engine now, and its rates over the last few seconds (``window_s``; null while no earlier reading of the
    last 5 s is at least 50 ms old: the first call has nothing to compare with). Read from counters serving keeps
    anyway: nothing is counted for this route."""

    window_s: float | None = Field(description="the seconds the rates are measured over")
    events_per_s: float | None = Field(description="events applied to the state per second")
    recommendations_per_s: float | None = Field(
        description="recommendation answers per second (user, session and similar items), this process"
    )
    recommendation_p99_ms: float | None = Field(
        description="99th percentile of their latency in ms, from the latency histogram's buckets (null: none)"
    )
    events_in_log: int = Field(description="events in the log")
    log_offset: int = Field(description="offset of the newest event in the log")
    state_lag_events: int = Field(description="events in the log not yet applied to the state")
    model_age_s: float | None = Field(
        description="freshness: seconds since the served model version was registered (null: no model)"
    )
    updater_lag_events: int | None = Field(
        description="events in the log after the last one the served version learned (null: not recorded)"
    )
    users: int = Field(description="users in the state")
    items: int = Field(description="items in the state")
    model_version: str | None = Field(description="the version served (null: popularity only)")
    retrieval: str = Field(
        description="how the served model ranks: exact, exact-float16, faiss, faiss-hnsw, scores, popularity"
    )
