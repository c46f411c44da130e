"""The model-update module: turns new events into incremental model updates (see :mod:`.learner`)."""

from liverec.online.learner import LearnerConfig, OnlineLearner, UpdateStats

__all__ = ["LearnerConfig", "OnlineLearner", "UpdateStats"]
