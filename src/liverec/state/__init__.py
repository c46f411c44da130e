"""What the engine knows now: user sequences, item statistics and the catalogue (see ``store``)."""

from liverec.state.store import Catalogue, State, StateConfig

__all__ = ["Catalogue", "State", "StateConfig"]
