"""SASRec's hyperparameters (:class:`SASRecConfig`) and their validation."""

from __future__ import annotations

import dataclasses
import math

from liverec.models.base import ModelConfig

LOSSES = ("auto", "softmax", "sampled-softmax", "bce")


@dataclasses.dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    """SASRec hyperparameters (defaults tuned on ml-100k's validation item, never on test; the
    measurements behind them are in docs/results.md).

    ``max_len``: most recent items a user is represented by; ``dim``: embedding width; ``n_layers`` /
    ``n_heads``: Transformer blocks / attention heads; ``dropout``: on embeddings, residual branches and
    FFN; ``attention_dropout``: on attention weights (0 by default: on CPU it forces the unfused
    attention kernel, and drawing its random mask slows an epoch down noticeably);
    ``loss``: one of ``auto`` (the default), ``softmax``, ``sampled-softmax``, ``bce``; ``auto`` trains with the
    full softmax while the catalogue has at most ``softmax_max_items`` items and with the sampled softmax above
    (:meth:`training_loss`): on Amazon Beauty (12,101 items) the sampled softmax with 2,048 negatives was ahead of
    the full one on validation NDCG@10, on ml-100k (1,682 items, fewer than the negatives) it was level on
    validation and the full softmax is exact there and cheaper; at a million items only the sampled one fits
    (docs/results.md, "Session 22"); ``n_negatives``: shared negatives per batch for ``sampled-softmax``;
    ``negative_power``: they are drawn ∝ (training count + 1) ** ``negative_power`` (0: uniform; 1, the
    default: in proportion to popularity), with the log-Q correction; on Amazon Beauty's validation item 1 was
    ahead of 0.75 (word2vec's exponent, the default until session 24) on four seeds of five and level on one,
    and 0.5 and 0 were behind on seed 0 (docs/results.md, "Session 24"); ml-100k trains with the full softmax;
    ``max_epochs``/``patience``: early stopping, evaluated every
    ``eval_every`` epochs on validation NDCG@10; ``patience_steps``: stop sooner when this many optimiser
    steps (batches) brought no improvement — fewer epochs of patience where an epoch is many steps (a large
    dataset), never more than ``patience`` (:meth:`epoch_patience`); 700 (two of Amazon Beauty's epochs; 1,000
    until session 26): with the weights' average over three epochs (``average_epochs``) Beauty's validation curve
    is smooth, and on each of five seeds the two-epoch patience kept the best epoch the three-epoch one kept, one
    epoch sooner (docs/results.md, "Session 26"); ``warmup_steps``: linear learning-rate
    warm-up; ``clip_norm``: each optimiser step of ``fit`` first rescales the gradients to at most this L2 norm,
    all parameters together (a row-wise step's item rows included; None: never). 1.0, the default: on Amazon
    Beauty the gradient's norm grows through training (median 0.75 in the first epoch, 1.6 in the fourth), and
    clipping at 1 was ahead on validation NDCG@10 on each of five seeds (0.0694 against 0.0662 on average; test
    0.0652 / 0.1070 against 0.0630 / 0.1031), with the best epoch a little later (median 13 against 12); ml-100k's
    full-softmax gradients stay under 1 almost always, and its figures did not change (docs/results.md,
    "Session 33"). ``partial_fit``'s updates do not clip (:meth:`for_updates`): they were not measured with it;
    ``n_threads``: torch threads while training and scoring (0 = all cores);
    ``partial_fit_epochs``: epochs over the new sequences in ``partial_fit``; ``crop``: which
    ``max_len + 1`` window of a longer history trains each epoch (``last``, or a ``random`` one);
    ``side_features``: add the mean of learned feature embeddings to each item's embedding when item
    features were given (:meth:`SASRec.set_item_features`); without them the model is id-only;
    ``logits_dtype``: ``float32`` or ``bfloat16`` for the full-softmax logits and log-softmax in training;
    ``loss_exclude_seen``: (``softmax`` only; on by default) at each position, drop the items already in
    the sequence up to that position from the softmax denominator (the target itself always stays);
    ``future_window``: (``softmax`` only; 2 by default) each position's loss is the mean cross-entropy
    of up to ``future_window`` next items (1 = plain next-item); ``window_gap_s``: an item after the next
    is in the window only while each item up to it came at most this many seconds after the one before
    (60 by default; 0: same timestamp only; None: any gap). Events logged moments apart are often in an
    arbitrary order (in ml-100k most consecutive ratings share a timestamp or are under a minute apart),
    so any of them may be the next; where events are further apart their order is taken as exact and
    the loss is the next-item loss. Chosen on validation: the window improves on the plain loss on
    ml-100k, and the gap limit keeps it from hurting a strictly ordered stream (the demo's synthetic
    one, with planted successors), where an unlimited window learns the wrong successors.
    ``untimed_window``: on data with order but no time (``Interactions.timed`` False: a sequences file,
    whose histories carry no timestamps) no gap can be measured, so this says what the window is
    there: False, the next-item loss (the order is taken as exact; ahead on Amazon Beauty's validation
    item on each of five seeds); True, every position's next ``future_window`` items, whatever their distance.
    ``refit``: once early stopping has chosen the epoch count, train afresh (same seed) for that many
    epochs on the training and validation events together (:meth:`SASRec.refit_on`), so the model also
    learns from each user's newest events; the fit then costs about 1.5 times as long.
    ``refit_scale``: the refit trains ``best_epoch × refit_scale`` epochs, rounded up (:meth:`refit_epochs`). 1, the
    default: a longer refit was no better when the whole procedure (selection, then refit) was judged on Amazon
    Beauty's validation item — 1.25 gained 0.0008, 0.0005 and 0.0005 NDCG@10 on three seeds, nothing on one and lost
    0.0011 on the seed whose chosen epoch was latest (docs/results.md, "Session 31").
    ``parallel_refit_from_s``: where the selection's first epoch took at least this many seconds, the refit runs in
    a second process from then on, beside the selection, keeping the weights of the epoch validation judges best so
    far (:mod:`~liverec.models.sasrec.parallel_refit`); None: never. The two share ``n_threads`` (0: one per core),
    and it applies where that is at least two, ``refit_scale`` is 1, the fit runs in one process and not row-wise.
    The same model as the refit after the selection (to the bit where both train at one thread), in about the
    selection's time: a step of a small catalogue is a few hundred small operations that a second thread barely
    speeds up (Amazon Beauty on session 34's two cores: ``liverec evaluate`` in a median of 2 min 18 s against 3 min
    21 s, the same NDCG@10; ml-100k level; docs/results.md, "Session 34"). 2 s, the default: the child takes about
    3.5 s to start (importing torch), which a fit of a few short epochs would wait for (a 0.3 s fit took 3.8 s).
    ``validation_users``: where more users than this are held out, early stopping compares epochs on a seeded
    sample of this many of them, and every other user's held-out event is trained on from the start, so there
    is no refit (None, the default: every user held out, then ``refit``). It saves the refit's epochs, but on
    Amazon Beauty a sample of 5,000 of 22,363 users cost 8 % of test NDCG@10 (seed 0: the sample chose an
    epoch sooner, and 5,000 users' newest events were never learned; docs/results.md).
    ``average_decay``: ``fit`` keeps an exponential moving average of the weights, updated after every
    optimiser step with this decay; early stopping judges the average and the fitted model keeps it (a refit:
    the average at its end). None: the last weights (``partial_fit``'s updates never average). 0.99 (about the
    last 100 steps) was ahead on validation NDCG@10 on both datasets, five seeds each: Amazon Beauty 0.0623
    against 0.0591 (every seed), ml-100k 0.1246 against 0.1228 (four of five); 0.95 did worse on ml-100k.
    ``average_epochs``: the decay is raised where needed so that the average spans at least this many epochs'
    steps (``1 / (1 - decay)`` of them; :meth:`average_decay_for`); None: ``average_decay`` as it is. A fixed
    number of steps is a different share of training on each dataset: 100 steps are 6.7 of ml-100k's epochs
    (15 steps each) but 0.3 of Amazon Beauty's (350), where validation NDCG@10 rose with the span (seed 0:
    0.0643 at 0.3 epochs, 0.0650 at 0.6, 0.0654 at 1, 0.0658 at 1.4, 0.0662 at 2.9). Three epochs leave
    ml-100k's 0.99 as it was (docs/results.md, "Session 26").
    ``shuffle_gap_s``: each epoch of ``fit`` (not ``partial_fit``), shuffle each run of a user's items
    that came at most this many seconds after the one before (0: same timestamp; None: never), so
    the log's arbitrary order within a moment is not learned as meaningful (timestamps stay put).
    Chosen on validation, where the same-timestamp rule did as well as a 60 s one.
    ``update_loss``: the loss of ``partial_fit``'s steps (the online updates); None (the default): ``loss``.
    An update whose loss is ``sampled-softmax`` reads and steps only the item rows it uses (the batch's
    items and its negatives) with a row-wise AdamW, so its cost does not grow with the catalogue (a
    model of a million items is trained with the sampled softmax, and so updated with it); every other
    step is AdamW over the whole network. Updating with another loss than the model was trained with
    lost to not updating at all in both directions measured (the full softmax on a sampled-softmax
    model, and the reverse on ml-100k: docs/results.md, "Online updates at a million items"), so the
    default follows ``loss`` at every catalogue size.
    ``update_negatives``: the shared negatives of ``partial_fit``'s sampled-softmax steps; None (the default): the
    training's ``n_negatives``. 256 made updates at a million items 1.6× faster (2,021 against 1,298 events/s) but
    lost 0.011-0.012 HR@10 in the streaming replay of a 60k-item synthetic stream (two seeds; docs/results.md,
    "Session 23"). 1,024 reached about 2,000 events/s there and was level on that stream, but behind on ml-100k's
    replay on three seeds (docs/results.md, "Session 28").
    ``update_batch_positions``: a batch of ``partial_fit`` takes more than ``batch_size`` windows while its windows
    hold fewer than this many positions (None: ``batch_size`` windows). A step costs about the same whatever its size
    below a hundred-odd positions (the negatives' rows, the optimiser, some 200 small operations: 8.9 ms for 16-48
    positions at a million items, 10.5 ms for 80-160), and a shop's stream brings many users with two or three
    items. 128 (the default) made updates at a million items 1.2-1.5x faster (three paired runs); in the streaming
    replay it was level or ahead on a 60k-item synthetic stream (three seeds: HR@10 +0.0014 on average) and changed
    nothing on ml-100k, whose update batches all hold more (three seeds, the same figures to the last digit;
    docs/results.md, "Session 29"). 256 and 512 were faster still (about 1.13x and 1.33x), but fewer steps per update
    put the synthetic stream's online arm behind on three seeds (HR@10 -0.0014 and -0.0022; "Session 30").
    ``row_wise_from``: ``fit`` with the sampled softmax (in one process) steps the same way — only the item rows
    each batch uses, row-wise AdamW — once the catalogue has at least this many items (100,000 by default; None:
    never). A dense AdamW step reads and writes the whole ``[n_items, dim]`` table and its moments, which made a
    training step cost 1.08 s at 917k items against 6 ms at 10k (docs/results.md, "At the size of a shop"). Each row
    first takes, in closed form, the zero-gradient steps it skipped since it was last used (:mod:`.row_wise`), so
    its momentum carries it as far as the dense step would: at 100k items the row-wise fit was 2.3–4× faster and
    within 1–2 % of the dense fit's validation NDCG@10 (two seeds; without the catch-up it lost 40 %).
    """

    max_len: int = 200
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    attention_dropout: float = 0.0
    loss: str = "auto"
    softmax_max_items: int = 4096  # loss "auto": the full softmax up to this many items, the sampled one above
    n_negatives: int = 2048
    negative_power: float = 1.0  # sampled softmax: negatives drawn ∝ (count + 1) ** negative_power
    batch_size: int = 64
    learning_rate: float = 2e-3
    clip_norm: float | None = 1.0  # fit: each step rescales the gradients to at most this L2 norm (None: never)
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_epochs: int = 200
    patience: int = 10
    patience_steps: int | None = 700  # also stop once this many optimiser steps brought no improvement
    eval_every: int = 1
    n_threads: int = 0
    partial_fit_epochs: int = 1
    crop: str = "last"
    plateau_factor: float = 1.0
    plateau_patience: int = 3
    side_features: bool = False
    logits_dtype: str = "float32"
    loss_exclude_seen: bool | None = None  # None: on for the full softmax, off for the other losses
    future_window: int | None = None  # None: 2 for the full softmax, 1 for the other losses
    window_gap_s: float | None = 60.0  # the window spans consecutive items at most this far apart in time
    untimed_window: bool = False  # without time: True, the window of future_window items; False, next item
    shuffle_gap_s: float | None = 0.0  # each training epoch, reorder runs of items at most this far apart
    refit: bool = True  # after early stopping, train afresh on training + validation events for best_epoch epochs
    refit_scale: float = 1.0  # ... times this (rounded up)
    parallel_refit_from_s: float | None = 2.0  # ... in a second process beside the selection, if epoch 1 took this
    average_decay: float | None = 0.99  # fit keeps an exponential moving average of the weights (per step)
    average_epochs: float | None = 3.0  # ... and it spans at least this many epochs' steps (raising the decay)
    validation_users: int | None = None  # early stopping on a sample of this many users; the rest train on theirs
    update_loss: str | None = None  # partial_fit's loss (None: the training loss)
    update_negatives: int | None = None  # partial_fit's sampled-softmax negatives per step (None: n_negatives)
    update_batch_positions: int | None = 128  # partial_fit's batches take more windows while under this many positions
    row_wise_from: int | None = 100_000  # fit with sampled-softmax steps only the rows it uses from this many items
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.average_decay is not None and not 0.0 <= self.average_decay < 1.0:
            raise ValueError(f"average_decay: expected a number in [0, 1) or None, got {self.average_decay!r}")
        if self.average_epochs is not None and not self.average_epochs > 0:
            raise ValueError(f"average_epochs: expected a positive number or None, got {self.average_epochs!r}")
        if self.validation_users is not None and self.validation_users < 1:
            raise ValueError(f"validation_users: expected a positive integer or None, got {self.validation_users!r}")
        if not self.refit_scale >= 1.0:
            raise ValueError(f"refit_scale: expected a number >= 1, got {self.refit_scale!r}")
        if self.parallel_refit_from_s is not None and not self.parallel_refit_from_s >= 0:
            raise ValueError(
                f"parallel_refit_from_s: expected seconds >= 0 or None, got {self.parallel_refit_from_s!r}"
            )
        if self.row_wise_from is not None and self.row_wise_from < 1:
            raise ValueError(f"row_wise_from: expected a positive integer or None, got {self.row_wise_from!r}")
        if self.update_loss is not None and self.update_loss not in LOSSES[1:]:
            raise ValueError(f"update_loss: expected None or one of {', '.join(LOSSES[1:])}, got {self.update_loss!r}")
        for name in ("max_len", "dim", "n_layers", "n_heads", "batch_size", "max_epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads: dim={self.dim} must be divisible by n_heads, got {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm: expected a positive number or None, got {self.clip_norm!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: expected a positive number, got {self.learning_rate!r}")
        if self.crop not in ("last", "random"):
            raise ValueError(f"crop: expected 'last' or 'random', got {self.crop!r}")
        if self.logits_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"logits_dtype: expected 'float32' or 'bfloat16', got {self.logits_dtype!r}")
        for name in ("window_gap_s", "shuffle_gap_s"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name}: expected a number >= 0 or None, got {value!r}")
        if self.patience_steps is not None and self.patience_steps < 1:
            raise ValueError(f"patience_steps: expected a positive integer or None, got {self.patience_steps!r}")
        if self.future_window is not None and self.future_window < 1:
            raise ValueError(f"future_window: expected a positive integer, got {self.future_window!r}")
        if (self.loss_exclude_seen or (self.future_window or 1) > 1) and self.loss not in ("softmax", "auto"):
            raise ValueError(f"loss_exclude_seen and future_window > 1 need loss='softmax', got {self.loss!r}")
        if self.softmax_max_items < 0:
            raise ValueError(f"softmax_max_items: expected an integer >= 0, got {self.softmax_max_items!r}")
        if self.n_negatives < 1:
            raise ValueError(f"n_negatives: expected a positive integer, got {self.n_negatives!r}")
        if not 0.0 <= self.negative_power <= 1.0:
            raise ValueError(f"negative_power: expected a number in [0, 1], got {self.negative_power!r}")
        if self.update_batch_positions is not None and self.update_batch_positions < 1:
            raise ValueError(
                f"update_batch_positions: expected a positive integer or None, got {self.update_batch_positions!r}"
            )
        if self.update_negatives is not None and self.update_negatives < 1:
            raise ValueError(f"update_negatives: expected a positive integer or None, got {self.update_negatives!r}")

    def average_decay_for(self, epoch_steps: int) -> float | None:
        """The moving average's decay for a fit of ``epoch_steps`` optimiser steps per epoch: ``average_decay``, raised
        where needed so that the average spans ``average_epochs`` epochs (``1 / (1 - decay)`` steps)."""
        if self.average_decay is None or self.average_epochs is None or epoch_steps < 1:
            return self.average_decay
        return max(self.average_decay, 1.0 - 1.0 / (self.average_epochs * epoch_steps))

    def refit_epochs(self, best_epoch: int) -> int:
        """The epochs a refit trains for, given the epoch early stopping chose: ``best_epoch × refit_scale``,
        rounded up."""
        return math.ceil(best_epoch * self.refit_scale - 1e-9)

    def epoch_patience(self, epoch_steps: int) -> int:
        """Epochs without improvement before early stopping: ``patience``, or fewer when ``patience_steps``
        optimiser steps (``epoch_steps`` per epoch) come sooner, at least one epoch."""
        if self.patience_steps is None or epoch_steps < 1:
            return self.patience
        return min(self.patience, max(1, math.ceil(self.patience_steps / epoch_steps)))

    def training_loss(self, n_items: int) -> str:
        """The loss a fit over a catalogue of ``n_items`` items trains with: ``loss``, or for ``auto`` the full
        softmax up to ``softmax_max_items`` items and the sampled softmax above."""
        if self.loss != "auto":
            return self.loss
        return "softmax" if n_items <= self.softmax_max_items else "sampled-softmax"

    def with_loss(self, loss: str) -> SASRecConfig:
        """These settings with ``loss`` (one of the concrete losses) in place of their own. ``auto`` becoming the
        full softmax keeps ``loss_exclude_seen`` and ``future_window`` as set; any other change of loss drops them
        to the new loss's own defaults (they apply to the full softmax only)."""
        if loss == self.loss:
            return self
        if loss == "softmax" and self.loss == "auto":
            return dataclasses.replace(self, loss=loss)
        return dataclasses.replace(self, loss=loss, loss_exclude_seen=None, future_window=None)

    def for_updates(self) -> SASRecConfig:
        """The settings ``partial_fit``'s steps train with: these, with ``loss`` replaced by ``update_loss``
        where that is set and differs (``loss_exclude_seen`` and ``future_window`` then fall back to the
        update loss's own defaults), ``n_negatives`` by ``update_negatives`` where that is set, and no
        gradient clipping (``clip_norm`` is the fit's)."""
        config = self if self.update_loss is None else self.with_loss(self.update_loss)
        negatives = config.n_negatives if self.update_negatives is None else self.update_negatives
        if negatives == config.n_negatives and config.clip_norm is None:
            return config
        return dataclasses.replace(config, n_negatives=negatives, clip_norm=None)

    # the full softmax's defaults (chosen on validation NDCG@10); left unset, the other losses keep the
    # plain next-item loss
    @property
    def excludes_seen(self) -> bool:
        """``loss_exclude_seen`` as it applies: unset, on for the full softmax only (``auto``: as the full softmax's;
        :meth:`with_loss` unsets it where ``auto`` becomes another loss)."""
        return self.loss in ("softmax", "auto") if self.loss_exclude_seen is None else self.loss_exclude_seen

    @property
    def window(self) -> int:
        """``future_window`` as it applies: unset, 2 for the full softmax (and ``auto``) and 1 otherwise."""
        if self.future_window is None:
            return 2 if self.loss in ("softmax", "auto") else 1
        return self.future_window
