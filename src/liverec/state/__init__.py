"""What the engine knows now: user sequences, item statistics and the catalogue (see ``store``, ``base``)."""

from liverec.state.base import StateStore
from liverec.state.store import Catalogue, State, StateConfig

__all__ = ["Catalogue", "State", "StateConfig", "StateStore"]
