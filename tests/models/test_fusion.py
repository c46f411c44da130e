"""Fusion: weights learned on validation with components fitted on training events only, then refit."""

from __future__ import annotations

import numpy as np
import pytest

from liverec.data.interactions import Interactions
from liverec.data.splits import leave_one_out
from liverec.models.fusion import Fusion
from liverec.models.sasrec import SASRec


def drifting_walks(n_users: int = 60, length: int = 14, n_items: int = 25, seed: int = 0) -> Interactions:
    """Walks where the next item is usually the previous + 1, with random detours: sequence models help,
    popularity a little."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(n_users):
        item = int(rng.integers(n_items))
        for _ in range(length):
            users.append(user)
            items.append(item)
            item = (item + 1) % n_items if rng.random() < 0.8 else int(rng.integers(n_items))
    times = np.tile(np.arange(length, dtype=float) * 3600, n_users)
    return Interactions.from_arrays(users, items, times, n_users=n_users, n_items=n_items)


@pytest.mark.slow
def test_weights_come_from_unrefit_components_and_the_kept_components_refit() -> None:
    data = drifting_walks()
    validation, test = leave_one_out(data)
    refit = Fusion(components="sasrec,pop").fit(test.train, validation=validation)
    plain = Fusion(components="sasrec,pop", refit=False).fit(test.train, validation=validation)
    # the weights and the validation figures they were chosen on do not depend on the refit
    np.testing.assert_array_equal(refit.weights, plain.weights)
    assert refit.validation_ndcg == plain.validation_ndcg
    assert refit.validation_ndcg["fusion"] >= refit.validation_ndcg["sasrec"]  # the anchor alone is a candidate
    sasrec = refit.components[0]
    assert isinstance(sasrec, SASRec) and not sasrec.config.refit  # judged as fitted on training events only ...
    assert sasrec.refit_epochs == sasrec.best_epoch > 0  # ... then refit on them and the validation events
    assert plain.components[0].refit_epochs == 0  # type: ignore[attr-defined]
    assert not np.allclose(refit.score(test.history), plain.score(test.history))


def test_item_features_reach_the_components_that_take_them() -> None:
    import scipy.sparse as sp

    data = drifting_walks()
    validation, test = leave_one_out(data)
    features = sp.csr_matrix(np.eye(data.n_items, 3, dtype=np.float32))
    fusion = Fusion(components="sasrec,pop").set_item_features(features, ["a", "b", "c"])
    fusion.fit(test.train, validation=validation)
    sasrec = fusion.components[0]
    assert isinstance(sasrec, SASRec) and sasrec.feature_names == ["a", "b", "c"]
    assert sasrec.item_features is not None and (sasrec.item_features != features).nnz == 0
