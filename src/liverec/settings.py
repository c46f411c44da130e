"""Engine settings: one TOML file plus ``LIVEREC_*`` environment variables, validated by pydantic.

Precedence, highest first: values passed in code (the CLI's flags), environment variables
(``LIVEREC_PORT=9000``; nested tables with ``__``, e.g. ``LIVEREC_EVENT_TYPES__VIEW=0.5``), the TOML file
(``--config FILE`` or ``LIVEREC_CONFIG``), then the defaults below. Unknown keys are errors, so a typo
in a setting name fails at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from liverec.policies import POLICIES, ExploreConfig
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

#: λ of a re-ranker named without one (request, arm or the ``rerank`` setting) when ``rerank_lambda`` is unset: the
#: settings docs/results.md ("Fairness, bias and re-ranking") found within 5 % of NDCG@10 for SASRec on ml-100k.
RERANK_DEFAULT_LAMBDA: dict[str, float] = {"calibration": 0.03, "long-tail": 0.3, "mmr": 0.5, "popularity": 0.3}

#: Settings renamed: old name -> new name. The old name is refused with the new one named, in a TOML file
#: and in the environment, rather than ignored (a deployment would silently get the default).
RENAMED = {"updater_replay_ratio": "updater_rehearsal_ratio"}


class Settings(BaseSettings):
    # LIVEREC_X=none unsets an optional setting (e.g. LIVEREC_GATE_MAX_SHARE=none)
    model_config = SettingsConfigDict(
        env_prefix="LIVEREC_", env_nested_delimiter="__", extra="forbid", env_parse_none_str="none"
    )

    data_dir: Path = Field(Path("liverec-data"), description="folder holding events.db, state and models/")
    host: str = Field("127.0.0.1", description="address the HTTP server binds to")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: any free port)")

    event_types: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="accepted event types and their weights in item popularity; weight 0 = stored, not used",
    )
    max_batch: int = Field(10_000, ge=1, description="most events in one POST /v1/events")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="largest request body (413 above)")
    max_context_bytes: int = Field(4096, ge=0, description="largest event `context` object, as compact JSON")
    max_future_skew_s: float | None = Field(
        86_400.0, ge=0, description="events timestamped further ahead of the server's clock are refused (none: any)"
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="SQLite synchronous mode: FULL survives power loss, NORMAL only process crashes"
    )

    backend: Literal["embedded", "redis"] = Field(
        "embedded",
        description="embedded: SQLite log + in-process state in data_dir; redis: log and state in Redis, shared by"
        " every replica and worker (the model registry stays in data_dir, which must then be shared storage)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis of the redis backend")
    redis_prefix: str = Field(
        "liverec", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="prefix of every Redis key LiveRec writes"
    )
    worker_claim_idle_s: float = Field(
        5.0, gt=0, description="redis backend: a worker takes over events another worker left pending this long"
    )
    redis_popularity_ttl_s: float = Field(
        1.0, ge=0, description="redis backend: how long a replica reuses the popularity vector it read"
    )

    max_history: int = Field(200, ge=1, description="items kept per user sequence")
    popularity_half_life_days: float = Field(7.0, gt=0, description="half-life of time-decayed popularity")
    snapshot_interval_s: float = Field(60.0, gt=0, description="how often the state snapshot is written")

    default_k: int = Field(10, ge=1, description="recommendations returned when k is not given")
    max_k: int = Field(1000, ge=1, description="largest k a request may ask for")
    ann_threshold: int = Field(200_000, ge=1, description="catalogue size from which retrieval uses FAISS")
    ann_kind: Literal["ivf", "hnsw"] = Field(
        "hnsw",
        description="the approximate index above ann_threshold: an HNSW graph over the inner-product reduction "
        "(filters inside the search; recall@10 >= 0.95 with filters at 100k and 300k trained SASRec items, "
        "docs/results.md, session 19; built in the background for each served version, which answers from the "
        "exact index until the graph is ready) or FAISS IVF-Flat (fast to build, far lower recall on those vectors)",
    )
    hnsw_ef_search: int = Field(
        128, ge=1, description="HNSW candidate list per search (ann_kind hnsw): higher finds more, slower"
    )
    compact_threshold: int = Field(
        50_000,
        ge=1,
        description="catalogue size from which exact retrieval scans a float16 copy of the item vectors "
        "(FAISS) and re-ranks in float32 (same results, about half the memory traffic)",
    )
    model_poll_interval_s: float = Field(1.0, gt=0, description="how often serve checks for a newly promoted model")
    torch_threads: int = Field(1, ge=1, description="threads per scoring call (torch intra-op and NumPy BLAS)")
    compute_threads: int = Field(
        2,
        ge=1,
        description="threads that score batches of recommendation requests (FAISS and torch run outside the GIL)",
    )
    recommend_batch: int = Field(
        32, ge=1, description="most concurrent recommendation requests scored in one model pass (1: one at a time)"
    )
    switch_interval_ms: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="serve's interpreter thread switch interval (sys.setswitchinterval): how long a thread back from "
        "FAISS or torch can wait for the GIL while another runs Python; None: 1 ms where the served catalogue reaches "
        "ann_threshold with ann_kind hnsw (many short graph calls), Python's own 5 ms below it",
    )

    updater: bool = Field(True, description="run the online updater as a child process of serve")
    updater_every_events: int | None = Field(1000, ge=1, description="learn after this many new events")
    updater_every_seconds: float | None = Field(30.0, gt=0, description="... or after the oldest waited this long")
    updater_lr_multiplier: float = Field(1.0, gt=0, description="learning-rate multiplier of online updates")
    updater_rehearsal_ratio: float = Field(1.0, ge=0, description="old users rehearsed per updated user")
    updater_relearn_history: bool = Field(
        False, description="updates learn the updated users' earlier events again (default: context only)"
    )
    gate_events: int = Field(500, ge=1, description="new events a candidate is judged on before promotion")
    gate_margin: float = Field(0.0, ge=0, description="promote unless NDCG@10 is worse than serving by more")
    gate_sample_rate: float = Field(
        1.0, gt=0, le=1, description="fraction of new events the gate ranks (lower: faster updater, slower decisions)"
    )
    gate_max_share: float | None = Field(
        0.25,
        gt=0,
        lt=1,
        description="while events wait, the gate ranks a sample sized to take at most this share of the updater's "
        "time (none: always gate_sample_rate)",
    )
    retrain_interval_s: float | None = Field(None, gt=0, description="periodic full retraining (off when unset)")

    # -- exploration and reward (liverec.policies, events.impressions; docs/architecture.md) -----------
    explore: str = Field(
        "greedy",
        description="the exploration policy of every list unless a request names one: greedy (the top k), epsilon "
        "(ε-greedy slot replacement), softmax (Plackett-Luce over the top candidates), cold (boost young items)",
    )
    explore_epsilon: float = Field(0.1, ge=0, le=1, description="epsilon: probability that a slot is replaced")
    explore_temperature: float = Field(1.0, gt=0, description="softmax: scores are divided by it before the softmax")
    explore_candidates: int = Field(
        50, ge=1, description="softmax and cold: how many of the model's top items the policy chooses from"
    )
    explore_cold_age_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="cold: items younger than this (catalogue attribute created_at, Unix s) or unknown to the "
        "serving model are boosted",
    )
    explore_cold_weight: float = Field(
        0.3, ge=0, description="cold: the boost, as a fraction of the candidates' score range (max - min)"
    )
    explore_seed: int | None = Field(
        None, description="seed of the exploration draws (one generator per request, in order); none: fresh entropy"
    )
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 2.0, "purchase": 5.0},
        description="event types that reward the list named by their recommendation_id, and the reward of each",
    )
    reward_window_s: float = Field(
        86_400.0, gt=0, description="an event later than this after its list was served is a late reward"
    )
    # -- re-ranking (liverec.rerank; docs/architecture.md, "Re-ranking and group metrics") ---------------------
    rerank: str | None = Field(
        None,
        description="the re-ranker of every list unless a request names one: none, mmr (diversity), calibration (the "
        "user's category mix), popularity (penalty), long-tail (quota); applied to the eligible candidates, before "
        "the exploration policy",
    )
    rerank_lambda: float | None = Field(
        None,
        ge=0,
        description="λ of the re-ranker when a request (or arm) names none: in [0, 1], popularity >= 0; 0 is no "
        "re-ranking (none: calibration 0.03, long-tail 0.3, mmr 0.5, popularity 0.3)",
    )
    rerank_candidates: int = Field(
        100,  # liverec.evaluation.protocols.RERANK_CANDIDATES (a test keeps them equal; imported, it would load torch)
        ge=1,
        le=10_000,
        description="how many of the model's top eligible items the re-ranker chooses from (as liverec evaluate)",
    )
    apprentice_policy: str | None = Field(
        None,
        description="apprentice mode: a candidate policy whose list is computed for every user and session request "
        "beside the live one and logged as a shadow impression (never shown; for off-policy evaluation); none: off",
    )
    apprentice_policy_settings: dict[str, float] = Field(
        default_factory=dict,
        description="the candidate policy's settings over the explore_* ones: epsilon, temperature, candidates, "
        "cold_age_s, cold_weight (e.g. LIVEREC_APPRENTICE_POLICY_SETTINGS__EPSILON=0.2)",
    )
    apprentice_model_version: str | None = Field(
        None, description="apprentice mode: the candidate's model version (none: the served one)"
    )
    experiment_model_cache: int = Field(
        4, ge=1, description="model versions besides the served one kept loaded for experiment arms and the apprentice"
    )

    # -- privacy (erasure, pseudonymisation, retention; docs/architecture.md) --------------------------
    pseudonym_secret: SecretStr | None = Field(
        None,
        description="store user ids as HMAC-SHA256(secret, id) in the log, state and models; the API still takes "
        "raw ids (never printed; keep it: without it no stored user can be found again)",
    )
    retention_days: float | None = Field(
        None, gt=0, description="delete events older than this many days (by event time) on a schedule (none: keep)"
    )
    retention_interval_s: float = Field(3600.0, gt=0, description="how often the retention pass runs")

    # -- access control (serving.auth; docs/deployment.md, "Security") ------------------------------
    auth: bool = Field(
        True, description="require an API key on every route but /health and /ready once a key exists (false: none)"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins a browser may call the API from (CORS; empty: none)"
    )
    rate_limit_per_s: float | None = Field(
        None, gt=0, description="requests per second each API key may make, on average (none: no limit)"
    )
    rate_limit_burst: int = Field(50, ge=1, description="requests a key may make at once above its rate")
    ui: bool = Field(
        True,
        description="serve the dashboard at /ui (static files shipped in the package; it reads the API with the key "
        "a person enters, and costs nothing while nobody has it open)",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = Field("json", description="structured JSON lines or plain text")
    access_log: bool = Field(False, description="one log line per HTTP request")

    @model_validator(mode="before")
    @classmethod
    def _refuse_renamed(cls, data: Any) -> Any:
        environment = {name.upper() for name in os.environ}
        for old, new in RENAMED.items():
            if (isinstance(data, dict) and old in data) or f"LIVEREC_{old.upper()}" in environment:
                raise ValueError(f"{old} (LIVEREC_{old.upper()}) was renamed {new} (LIVEREC_{new.upper()})")
        return data

    @field_validator("event_types")
    @classmethod
    def _check_event_types(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("at least one event type is needed")
        for name, weight in value.items():
            if not name or weight < 0 or weight != weight:
                raise ValueError(f"event type {name!r}: weight must be a number >= 0, got {weight}")
        return value

    @field_validator("explore")
    @classmethod
    def _check_explore(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"expected one of {', '.join(sorted(POLICIES))}, got {value!r}")
        return value

    @field_validator("rerank")
    @classmethod
    def _check_rerank(cls, value: str | None) -> str | None:
        if value is None or value == "none":
            return None
        from liverec.rerank import RERANKERS  # only when set: it loads torch (through the model base class)

        if value not in RERANKERS:
            raise ValueError(f"expected one of none, {', '.join(sorted(RERANKERS))}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_rerank_lambda(self) -> Settings:
        if self.rerank is not None and self.rerank_lambda is not None:
            from liverec.rerank import RERANKERS

            try:
                RERANKERS[self.rerank].check_strength(self.rerank_lambda)
            except ValueError as error:
                raise ValueError(f"rerank_lambda: {error}") from None
        return self

    @field_validator("apprentice_policy")
    @classmethod
    def _check_apprentice_policy(cls, value: str | None) -> str | None:
        if value is not None and value not in POLICIES:
            raise ValueError(f"expected one of {', '.join(sorted(POLICIES))}, got {value!r}")
        return value

    @field_validator("apprentice_policy_settings")
    @classmethod
    def _check_apprentice_policy_settings(cls, value: dict[str, float]) -> dict[str, float]:
        known = [f.name for f in dataclasses.fields(ExploreConfig)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(known)}")
        if "candidates" in value:
            value = {**value, "candidates": int(value["candidates"])}
        ExploreConfig(**value)  # type: ignore[arg-type]  # a value out of its range names itself
        return value

    @field_validator("reward_weights")
    @classmethod
    def _check_reward_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not name or weight != weight or weight in (float("inf"), float("-inf")):
                raise ValueError(f"event type {name!r}: reward must be a finite number, got {weight}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("LIVEREC_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_file)))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Settings from ``config_file`` (or ``LIVEREC_CONFIG``), the environment and ``overrides``."""
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"--config: no such file {str(path)!r}")
            previous = os.environ.get("LIVEREC_CONFIG")
            os.environ["LIVEREC_CONFIG"] = str(path)
            try:
                return cls(**{k: v for k, v in overrides.items() if v is not None})
            finally:
                if previous is None:
                    del os.environ["LIVEREC_CONFIG"]
                else:
                    os.environ["LIVEREC_CONFIG"] = previous
        return cls(**{k: v for k, v in overrides.items() if v is not None})

    def describe(self) -> dict[str, Any]:
        """The effective settings as plain JSON values (printed at start-up; secrets shown as ``**********``)."""
        return self.model_dump(mode="json")
