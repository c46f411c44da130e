"""The simulator (``liverec simulate``): known users, the serving engine's policies, position-biased clicks, online
learning; and the true value of a policy under its click model (the ground truth of off-policy evaluation)."""

from liverec.simulation.clicks import (
    ClickModel,
    Context,
    PolicyValue,
    expected_reward,
    list_reward,
    oracle_reward,
    true_value,
)
from liverec.simulation.simulator import SimulationConfig, SimulationRun, Simulator, World

__all__ = [
    "ClickModel",
    "Context",
    "PolicyValue",
    "SimulationConfig",
    "SimulationRun",
    "Simulator",
    "World",
    "expected_reward",
    "list_reward",
    "oracle_reward",
    "true_value",
]
