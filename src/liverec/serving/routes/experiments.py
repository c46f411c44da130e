"""Experiments: start one (admin), read what each arm earned (read), stop it or promote its winner (admin).

The engine does the work (:meth:`~liverec.serving.engine.Engine.create_experiment` and its neighbours); the
experiment itself, its assignment and its statistics are :mod:`liverec.experiments`. Routes are plain ``def``:
FastAPI runs them in its thread pool, as they read the store, load models and scan the impressions.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from liverec.experiments import NAME_PATTERN, Arm, Experiment, ExperimentConflict
from liverec.serving.auth import ADMIN, AUTH_RESPONSES, READ
from liverec.serving.deps import EngineDep
from liverec.serving.schemas import (
    ErrorOut,
    ExperimentIn,
    ExperimentListOut,
    ExperimentOut,
    ExperimentPromotedOut,
    ExperimentReportOut,
    PromoteIn,
    ShadowArmIn,
)

__all__ = ["router"]

router = APIRouter(tags=["experiments"], responses=AUTH_RESPONSES)

ExperimentIdPath = Annotated[str, Path(pattern=NAME_PATTERN, description="the experiment's id")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "no such experiment"}}


def _arm(arm: ShadowArmIn, share: float, shadow: bool) -> Arm:
    return Arm(
        name=arm.name,
        share=share,
        model_version=arm.model_version,
        policy=arm.policy,
        policy_settings=arm.policy_settings.model_dump(exclude_none=True),
        shadow=shadow,
        rerank=arm.rerank,
        rerank_lambda=arm.rerank_lambda,
    )


def _unknown(experiment_id: str) -> HTTPException:
    return HTTPException(404, detail=f"experiment_id {experiment_id!r}: no such experiment")


@router.post(
    "/v1/experiments",
    status_code=201,
    summary="Start an experiment: live arms share the users (sticky by a hash of the user id), shadow arms are logged",
    dependencies=[ADMIN],
    response_model=ExperimentOut,
    responses={
        404: {"model": ErrorOut, "description": "an arm names a model version that is not registered"},
        409: {"model": ErrorOut, "description": "the experiment id is taken, or another experiment is running"},
    },
)
def create_experiment(body: ExperimentIn, engine: EngineDep) -> dict[str, Any]:
    arms = [_arm(arm, arm.share, False) for arm in body.arms] + [_arm(arm, 0.0, True) for arm in body.shadow_arms]
    experiment = Experiment(
        experiment_id=body.experiment_id or f"exp-{uuid.uuid4().hex[:12]}",
        arms=tuple(arms),
        name=body.name,
        created_at=time.time(),
    )
    try:
        engine.create_experiment(experiment)
    except KeyError:
        versions = ", ".join(f"{a.name}: {a.model_version!r}" for a in arms if a.model_version is not None)
        raise HTTPException(
            404, detail=f"arms.model_version: not every version is registered ({versions}); see GET /v1/models"
        ) from None
    except ExperimentConflict as error:
        raise HTTPException(409, detail=str(error)) from None
    return experiment.to_json()


@router.get(
    "/v1/experiments",
    summary="Every experiment, with what each arm earned",
    dependencies=[READ],
    response_model=ExperimentListOut,
)
def list_experiments(engine: EngineDep) -> dict[str, Any]:
    return {"experiments": engine.experiment_reports(engine.experiments.experiments())}


@router.get(
    "/v1/experiments/{experiment_id}",
    summary="An experiment: per arm impressions, users, reward rate with its interval, the difference with the "
    "control and its p-value, and the sample-ratio check",
    dependencies=[READ],
    response_model=ExperimentReportOut,
    responses=_NOT_FOUND,
)
def get_experiment(experiment_id: ExperimentIdPath, engine: EngineDep) -> dict[str, Any]:
    experiment = engine.experiments.get(experiment_id)
    if experiment is None:
        raise _unknown(experiment_id)
    return engine.experiment_reports([experiment])[0]


@router.post(
    "/v1/experiments/{experiment_id}/stop",
    summary="Stop assigning users (idempotent; a stopped experiment can still be promoted)",
    dependencies=[ADMIN],
    response_model=ExperimentOut,
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorOut, "description": "another process changed the experiment meanwhile"},
    },
)
def stop_experiment(experiment_id: ExperimentIdPath, engine: EngineDep) -> dict[str, Any]:
    try:
        experiment = engine.stop_experiment(experiment_id)
    except ExperimentConflict as error:
        raise HTTPException(409, detail=str(error)) from None
    if experiment is None:
        raise _unknown(experiment_id)
    return experiment.to_json()


@router.post(
    "/v1/experiments/{experiment_id}/promote",
    summary="Stop the experiment and serve an arm's model version and policy from now on",
    dependencies=[ADMIN],
    response_model=ExperimentPromotedOut,
    responses={
        404: {"model": ErrorOut, "description": "no such experiment, or no such arm in it"},
        409: {
            "model": ErrorOut,
            "description": "promoted already, or no arm named and none beats the control at p < 0.05",
        },
    },
)
def promote_experiment(
    experiment_id: ExperimentIdPath, engine: EngineDep, body: PromoteIn | None = None
) -> dict[str, Any]:
    try:
        experiment = engine.promote_experiment(experiment_id, body.arm if body is not None else None)
    except LookupError as error:
        raise HTTPException(404, detail=str(error)) from None
    except ExperimentConflict as error:
        raise HTTPException(409, detail=str(error)) from None
    if experiment is None:
        raise _unknown(experiment_id)
    return {**experiment.to_json(), "serving": engine.model_version, "serving_policy": engine.default_policy.name}
