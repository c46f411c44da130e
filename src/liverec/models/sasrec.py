"""SASRec: a causal self-attention sequence recommender (Kang & McAuley, ICDM 2018), LiveRec's main model.

The network (:class:`SASRecNetwork`) embeds a user's recent item sequence, adds learned positions,
runs ``n_layers`` pre-LayerNorm causal Transformer blocks and reads the user's representation at
the last position. Scores are dot products with the same item table that embeds the inputs, so a
retrieval index over item vectors serves it directly. There are no per-user parameters: a new event
changes the representation at once, and deleting a user's history forgets them.

Training (:class:`SASRec`) takes one sequence per user and puts a loss at every position (never one
sample per prefix). Three losses:

* ``softmax`` — full softmax cross-entropy over the catalogue (default; exact while it fits).
* ``sampled-softmax`` — cross-entropy over the target and ``n_negatives`` shared negatives drawn
  ∝ popularity^0.75, with the log-Q correction so the estimate is unbiased for large catalogues.
* ``bce`` — binary cross-entropy with one uniform negative per position (the original paper's loss).

AdamW with linear warm-up; early stopping on validation NDCG@10 (the validation split passed to
``fit``, or each user's last training event held out when none is given). Then, with ``refit`` (the
default), the model is trained afresh for the chosen number of epochs on the training events plus
the held-out ones, each user's newest (+0.003 test NDCG@10 on ml-100k, 4 of 5 seeds;
docs/results.md); without it the best epoch's weights are kept. Each epoch of full training
shuffles the runs of a user's items logged at one timestamp (``shuffle_gap_s``), whose order in a
log is arbitrary. Item id 0 is padding inside the network; LiveRec item ``i`` is row ``i + 1``.

Optional side features (``side_features``, given by :meth:`SASRec.set_item_features`: genres,
categories): an item's vector is its id embedding plus the mean of its features' learned
embeddings, in the input sequence and in the output table alike, so retrieval's item vectors
include them. Items the table grows for in ``partial_fit`` start at the centroid of the known items
that share their features (or at the mean item when they have none).

``partial_fit(batch, learn)`` continues from the current weights. With a ``learn`` mask (the online
learner's default) the unmarked events are context: each sequence runs through the network whole,
but the loss is put only on the positions whose next item is a marked (new) event, so an update
does not learn a user's old items again every time it learns their new ones.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from liverec.data.interactions import Histories, Interactions, concat_ranges
from liverec.data.splits import RankingSplit, hold_out_last, with_held_out
from liverec.models.base import ModelConfig, Recommender, register, single_target_ndcg
from liverec.models.torch_utils import torch_threads

LOSSES = ("softmax", "sampled-softmax", "bce")
#: logits per chunk of the full-softmax loss (2M: 8 MB in float32). One ``[positions, n_items]`` matrix
#: per batch (86 MB for 64 users x 200 positions x 1,682 items) is a large fresh allocation, page-faulted
#: in on every step: for 8,000 positions, forward and backward took 121 ms with 53k page faults in one
#: piece and 57 ms with 1.5k in chunks (docs/results.md, "Epoch speed")
SOFTMAX_CHUNK_LOGITS = 1 << 21


@dataclasses.dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    """SASRec hyperparameters (defaults tuned on ml-100k's validation item, never on test).

    ``max_len``: most recent items a user is represented by; ``dim``: embedding width; ``n_layers`` /
    ``n_heads``: Transformer blocks / attention heads; ``dropout``: on embeddings, residual branches and
    FFN; ``attention_dropout``: on attention weights (0 by default: on CPU it forces the unfused
    attention kernel and its random mask costs about a fifth of an epoch);
    ``loss``: one of ``softmax``, ``sampled-softmax``, ``bce``; ``n_negatives``: shared negatives per
    batch for ``sampled-softmax``; ``max_epochs``/``patience``: early stopping, evaluated every
    ``eval_every`` epochs on validation NDCG@10; ``warmup_steps``: linear learning-rate warm-up;
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
    arbitrary order (ml-100k: 51 % of consecutive ratings share a timestamp, 86 % are under a minute
    apart), so any of them may be the next; where events are further apart their order is taken as
    exact and the loss is the next-item loss. Chosen on validation: on ml-100k the defaults add +0.011
    NDCG@10 over the plain loss (3 of 3 seeds), and the gap limit changes that within noise; on the
    demo's synthetic stream, strictly ordered with planted successors, an unlimited window cost 18 %
    NDCG@10 and the gap limit gives it back (docs/results.md). ``refit``: once early stopping has chosen
    the epoch count, train afresh (same seed) for that many epochs on the training and validation
    events together (:meth:`SASRec.refit_on`); the fit then costs about 1.5 times as long.
    ``shuffle_gap_s``: each epoch of ``fit`` (not ``partial_fit``), shuffle each run of a user's items
    that came at most this many seconds after the one before (0: same timestamp; None: never), so
    the log's arbitrary order within a moment is not learned as meaningful (timestamps stay put).
    Chosen on validation: on ml-100k, +0.0021 validation NDCG@10 over ten seeds (7 of 10), and a 60 s
    rule no better than the same-timestamp one (docs/results.md).
    """

    max_len: int = 200
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    attention_dropout: float = 0.0
    loss: str = "softmax"
    n_negatives: int = 256
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_epochs: int = 200
    patience: int = 10
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
    shuffle_gap_s: float | None = 0.0  # each training epoch, reorder runs of items at most this far apart
    refit: bool = True  # after early stopping, train afresh on training + validation events for best_epoch epochs
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("max_len", "dim", "n_layers", "n_heads", "batch_size", "max_epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads: dim={self.dim} must be divisible by n_heads, got {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
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
        if self.future_window is not None and self.future_window < 1:
            raise ValueError(f"future_window: expected a positive integer, got {self.future_window!r}")
        if (self.loss_exclude_seen or (self.future_window or 1) > 1) and self.loss != "softmax":
            raise ValueError(f"loss_exclude_seen and future_window > 1 need loss='softmax', got {self.loss!r}")

    # the full softmax's defaults (validation NDCG@10 on ml-100k, docs/results.md); left unset, the
    # other losses keep the plain next-item loss
    @property
    def excludes_seen(self) -> bool:
        """``loss_exclude_seen`` as it applies: unset, on for the full softmax only."""
        return self.loss == "softmax" if self.loss_exclude_seen is None else self.loss_exclude_seen

    @property
    def window(self) -> int:
        """``future_window`` as it applies: unset, 2 for the full softmax and 1 otherwise."""
        if self.future_window is None:
            return 2 if self.loss == "softmax" else 1
        return self.future_window


class SeenItems(NamedTuple):
    """The items each training position has seen, without a ``[positions, seq_len]`` copy per position.

    Position ``i`` is column ``column[i]`` of row ``row[i]`` of ``sequences`` ``[batch, seq_len]``
    (network rows, left-padded with 0): it has seen that row's items at columns ``<= column[i]``.
    """

    sequences: torch.Tensor
    row: torch.Tensor
    column: torch.Tensor

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """``[stop - start, seq_len]``: positions ``start:stop``'s seen items (network rows), 0 after them."""
        seen = self.sequences[self.row[start:stop]]
        later = torch.arange(seen.shape[1], device=seen.device)[None, :] > self.column[start:stop, None]
        return seen.masked_fill(later, 0)


class _SoftmaxWindowLoss(torch.autograd.Function):
    """The full-softmax window loss with its gradients computed in the forward pass, chunk by chunk.

    Inputs: ``hidden`` ``[n, dim]``, ``items`` ``[n_items, dim]``, ``future`` ``[n, k]`` network rows of
    each position's targets (0 = none; column 0 is always an item), ``seen`` (:class:`SeenItems` or
    None) and the logits dtype. Returns the mean over positions of the mean cross-entropy of each
    position's targets, seen items out of every denominator but each term's own target (a repeat).

    The loss is the last node of the graph, so its gradients can be formed while each chunk's logits
    are at hand: one ``[rows, n_items + 1]`` buffer per chunk becomes the logits, then, in place, the
    masked exponentials, then the gradient of the logits; autograd's version makes a masked copy, a
    log-sum-exp and their backward passes, about 0.6 s of a 2.5 s epoch on ml-100k. Column 0 of the
    buffer stands for the padding row, so the seen items (network rows, 0 after a position's prefix)
    are scattered as ``-inf`` straight into it, with no boolean mask. ``backward`` scales the stored
    gradients by the incoming one (a distributed rank's loss weight).

    Per chunk, with ``m`` a row's largest unmasked logit or target logit, ``S = Σ_unseen exp(l - m)`` and,
    for term ``j`` with target ``t`` and weight ``w_j`` (``1 / (n · targets of the row)``),
    ``Z_j = S + [t seen] exp(l_t - m)``: the loss adds ``w_j (log Z_j + m - l_t)``; the gradient of an
    unseen logit is ``exp(l - m) Σ_j w_j / Z_j``, and each target's gets ``w_j ([t seen] exp(l_t - m) / Z_j - 1)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        items: torch.Tensor,
        future: torch.Tensor,
        seen: SeenItems | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        n, dim = hidden.shape
        table = torch.cat([items.new_zeros(1, dim), items]).to(dtype)  # row 0: padding
        inputs = hidden.to(dtype)
        exists = future > 0
        weights = exists / (exists.sum(1, keepdim=True) * max(n, 1))  # [n, k] float32
        grad_hidden = torch.empty(n, dim, dtype=torch.float32)
        grad_table = torch.zeros(len(table), dim, dtype=torch.float32)
        rows = max(1, SOFTMAX_CHUNK_LOGITS // len(table))
        total = torch.zeros((), dtype=torch.float64)
        minus_inf = float("-inf")
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            targets, weight = future[start:stop], weights[start:stop]
            logits = inputs[start:stop] @ table.T  # [rows, n_items + 1]
            target_logits = logits.gather(1, targets).float().masked_fill(~exists[start:stop], minus_inf)
            repeat = torch.zeros_like(targets, dtype=torch.bool)  # a target among the seen items
            if seen is not None:
                logits.scatter_(1, seen.rows(start, stop), minus_inf)
                repeat = (logits.gather(1, targets) == minus_inf) & exists[start:stop]
            logits[:, 0] = minus_inf
            peak = torch.maximum(logits.amax(1).float(), target_logits.amax(1))[:, None]  # [rows, 1]
            exps = logits.sub_(peak.to(dtype)).exp_()  # 0 at seen items and padding
            own = (target_logits - peak).exp()  # [rows, k], 0 where no target
            normaliser = exps.sum(1, keepdim=True, dtype=torch.float32) + torch.where(repeat, own, 0.0)
            terms = normaliser.log() + peak - target_logits.masked_fill(weight == 0, 0.0)
            total += (terms * weight).sum(dtype=torch.float64)
            grad = exps.mul_((weight / normaliser).sum(1, keepdim=True).to(dtype))
            target_grad = torch.where(repeat, own / normaliser, 0.0) - 1.0
            grad.scatter_add_(1, targets, (weight * target_grad).to(dtype))
            grad_hidden[start:stop] = grad @ table
            grad_table.addmm_(grad.T.float() if dtype != torch.float32 else grad.T, hidden[start:stop])
        ctx.save_for_backward(grad_hidden, grad_table[1:])
        return total.float()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_hidden, grad_items = ctx.saved_tensors
        return grad_hidden * grad_output, grad_items * grad_output, None, None, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn as uniform floats compared with ``p``: the same Bernoulli(1 - p)
    mask in distribution, drawn faster on CPU than by torch's ``bernoulli_`` (one 64x200x64 activation,
    forward and backward, one thread: 15.3 ms with ``F.dropout``, 7.1 ms this way; docs/results.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * keep


class TransformerBlock(nn.Module):
    """Pre-LayerNorm causal self-attention + position-wise feed-forward, each with a residual."""

    def __init__(self, dim: int, n_heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.query_key_value = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feed_forward_norm = nn.LayerNorm(dim, eps=1e-8)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = Dropout(dropout)
        self.n_heads = n_heads
        self.attention_dropout = attention_dropout

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, last_only: bool = False) -> torch.Tensor:
        """``x``: ``[batch, seq_len, dim]`` -> ``[batch, seq_len, dim]`` (``[batch, 1, dim]`` if ``last_only``).

        ``attention_mask`` ``[batch, 1, seq_len, seq_len]`` (additive: 0 = may attend, -inf = may not):
        position t sees the non-padding positions <= t, so the result does not depend on how much
        padding a row has; ``None`` when no row has padding (plain causal attention).
        ``last_only``: compute the output of the last position alone (its query against every key),
        which is all the final block must produce for a user vector: the other positions' queries,
        attention output and feed-forward are skipped.
        """
        batch, seq_len, dim = x.shape
        head_dim = dim // self.n_heads
        normed = self.attention_norm(x)
        if last_only:
            weight, bias = self.query_key_value.weight, self.query_key_value.bias
            query = F.linear(normed[:, -1:], weight[:dim], bias[:dim])
            key_value = F.linear(normed, weight[dim:], bias[dim:])
            query = query.view(batch, 1, self.n_heads, head_dim).transpose(1, 2)
            key_value = key_value.view(batch, seq_len, 2, self.n_heads, head_dim).permute(2, 0, 3, 1, 4)
            keys, values = key_value[0], key_value[1]
            if attention_mask is not None:
                attention_mask = attention_mask[:, :, -1:]
            x, seq_len = x[:, -1:], 1  # the last query sees every key: no causal mask needed
        else:
            qkv = self.query_key_value(normed)
            qkv = qkv.view(batch, seq_len, 3, self.n_heads, head_dim).permute(2, 0, 3, 1, 4)
            query, keys, values = qkv[0], qkv[1], qkv[2]
        attended = F.scaled_dot_product_attention(
            query,
            keys,
            values,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=attention_mask is None and not last_only,
        )  # [batch, heads, seq_len, head_dim]
        attended = attended.transpose(1, 2).reshape(batch, seq_len, dim)
        x = x + self.dropout(self.attention_out(attended))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class SASRecNetwork(nn.Module):
    """Item (+ optional side-feature) and position embeddings, causal Transformer blocks, final LayerNorm.

    With ``n_features > 0`` an item row is ``item_embedding[row] + mean(feature_embedding[f] for f in
    its features)``; ``feature_slots`` ``[n_items + 1, width]`` lists each row's features as
    feature rows (feature ``f`` is row ``f + 1``), right-padded with 0, the padding row that the mean
    skips. Set it with :meth:`set_feature_slots`.
    """

    feature_slots: torch.Tensor

    def __init__(self, n_items: int, config: SASRecConfig, n_features: int = 0) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, config.dim, padding_idx=0)  # row 0 = padding
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        self.embedding_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.n_heads, config.dropout, config.attention_dropout)
            for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(config.dim, eps=1e-8)
        self.scale = math.sqrt(config.dim)
        self.max_len = config.max_len
        # registered last, so the other parameters draw the same initial values with or without it
        self.feature_embedding: nn.EmbeddingBag | None = None
        if n_features > 0:
            self.feature_embedding = nn.EmbeddingBag(n_features + 1, config.dim, mode="mean", padding_idx=0)
            self.register_buffer("feature_slots", torch.zeros(n_items + 1, 1, dtype=torch.long), persistent=False)

    def set_feature_slots(self, slots: np.ndarray) -> None:
        """``slots``: ``[n_items + 1, width]`` feature rows per item row, 0-padded (see the class docstring)."""
        if self.feature_embedding is None:
            raise RuntimeError("set_feature_slots: this network was built without side features")
        if slots.shape[0] != self.item_embedding.num_embeddings:
            raise ValueError(f"slots: expected {self.item_embedding.num_embeddings} rows, got {slots.shape[0]}")
        self.feature_slots = torch.from_numpy(np.ascontiguousarray(slots, dtype=np.int64))

    def item_table(self) -> torch.Tensor:
        """``[n_items + 1, dim]``: every item row's vector (id + side features); row 0 (padding) is zero."""
        if self.feature_embedding is None:
            return self.item_embedding.weight
        return self.item_embedding.weight + self.feature_embedding(self.feature_slots)

    def embed(self, rows: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Item rows of any shape ``[...]`` -> their item vectors ``[..., dim]`` (id + side features).

        ``table``: :meth:`item_table`, when the caller has it (training computes it once per step for
        the inputs and the output scores); without it only the rows asked for are pooled (serving).
        """
        if table is not None:
            return F.embedding(rows, table, padding_idx=0)
        vectors = self.item_embedding(rows)
        if self.feature_embedding is None:
            return vectors
        slots = self.feature_slots[rows.reshape(-1)]  # [n, width]
        return vectors + self.feature_embedding(slots).view(vectors.shape)

    def forward(
        self, sequences: torch.Tensor, table: torch.Tensor | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """``sequences``: ``[batch, seq_len]`` item rows, left-padded with 0 -> hidden ``[batch, seq_len, dim]``.

        Positions are counted from the right edge (the newest item always has position ``max_len - 1``),
        so a batch padded to its own longest row gives the same result as one padded to ``max_len``.
        ``table``: :meth:`item_table` if already computed (see :meth:`embed`). ``last_only``: return
        only the last position, ``[batch, 1, dim]`` — the user vector — skipping the final block's
        work for the other positions (a third less compute at 2 blocks).
        """
        seq_len = sequences.shape[1]
        if seq_len > self.max_len:
            raise ValueError(f"sequences: expected at most max_len={self.max_len} columns, got {seq_len}")
        positions = torch.arange(self.max_len - seq_len, self.max_len, device=sequences.device)
        x = self.embed(sequences, table) * self.scale + self.position_embedding(positions)[None]
        x = self.embedding_dropout(x)
        is_item = sequences > 0  # [batch, seq_len]
        not_padding = is_item.unsqueeze(-1).to(x.dtype)
        attention_mask: torch.Tensor | None = None  # None: no padding, plain causal attention
        if self.training or not bool(is_item.all()):
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=sequences.device).tril()
            eye = torch.eye(seq_len, dtype=torch.bool, device=sequences.device)
            # keys: earlier non-padding positions; a padding query sees itself only (no empty softmax rows)
            allowed = (causal & (is_item[:, None, :] | eye))[:, None]  # [batch, 1, seq_len, seq_len]
            # additive float form, made once: given a boolean mask, attention converts it in every block
            attention_mask = torch.zeros(allowed.shape, dtype=x.dtype).masked_fill_(~allowed, float("-inf"))
        x = x * not_padding
        last = len(self.blocks) - 1
        for n, block in enumerate(self.blocks):
            if last_only and n == last:
                return self.final_norm(block(x, attention_mask, last_only=True) * not_padding[:, -1:])
            x = block(x, attention_mask) * not_padding
        return self.final_norm(x[:, -1:] if last_only else x)

    def item_vectors(self) -> torch.Tensor:
        """``[n_items, dim]``: the output item table (padding row dropped), side features included."""
        return self.item_table()[1:]

    def feature_vectors(self) -> torch.Tensor:
        """``[n_items, dim]``: the side-feature part of each item's vector (zeros without features)."""
        if self.feature_embedding is None:
            return torch.zeros_like(self.item_embedding.weight[1:])
        return self.feature_embedding(self.feature_slots[1:])


def padded_sequences(histories: Histories, length: int) -> np.ndarray:
    """``[len(histories), length]`` of each row's last ``length`` items as network rows (item + 1), left-padded."""
    recent = histories.last(length)
    lengths = recent.lengths()
    out = np.zeros((len(recent), length), dtype=np.int64)
    rows = np.repeat(np.arange(len(recent)), lengths)
    columns = (
        np.arange(len(recent.items)) - np.repeat(recent.indptr[:-1], lengths) + np.repeat(length - lengths, lengths)
    )
    out[rows, columns] = recent.items + 1
    return out


@register
class SASRec(Recommender):
    """``sasrec``: self-attentive sequential recommendation (see the module docstring)."""

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig
    supports_partial_fit = True
    handles_new_items = True
    learns_in_context = True
    uses_validation = True
    provides_vectors = True
    takes_item_features = True

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: SASRecNetwork | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.item_log_q = np.zeros(0)
        self.history: list[dict[str, float]] = []
        self._steps = 0
        self._lr_scale = 1.0
        #: the epoch early stopping chose and its validation NDCG@10 (set by ``fit``)
        self.best_epoch, self.best_validation_ndcg = 0, -1.0
        #: epochs of the final training on every event (0: the model is the early-stopped one)
        self.refit_epochs = 0
        #: binary ``[n_described_items, n_features]`` side features (see :meth:`set_item_features`)
        self.item_features: sp.csr_matrix | None = None
        #: the features' names (column order of ``item_features``), when given
        self.feature_names: list[str] | None = None

    # ------------------------------------------------------------------------------------------ side features
    def has_item_features(self) -> bool:
        return self.item_features is not None

    def set_item_features(self, features: sp.spmatrix | np.ndarray | None, names: Sequence[str] | None = None) -> Self:
        """Give the items' side features (genres, categories): a ``[n_items, n_features]`` 0/1 matrix.

        Row ``i`` describes internal item ``i``; items beyond the last row have no features. Used by
        the next ``fit`` when ``config.side_features`` is on (``None`` or an empty matrix: id-only).
        ``names``: one per column (e.g. ``ItemMetadata.genre_matrix()``'s vocabulary); once the model
        has names, a later call's columns are matched to them by name (new names are appended), so
        a catalogue's categories may come in any order. Without names, columns must keep their
        meaning between calls. On a model fitted with features, a call with more rows (new items) or
        more columns (new features) takes effect at once: new feature columns get rows at the mean
        feature vector, and the next ``partial_fit`` starts new items from their features.
        """
        if features is None:
            self.item_features, self.feature_names = None, None
            return self
        if np.ndim(features) != 2:
            raise ValueError(f"features: expected a 2-D [n_items, n_features] matrix, got shape {np.shape(features)}")
        matrix = sp.csr_matrix(features, dtype=np.float32)
        if names is not None:
            names = [str(name) for name in names]
            if len(names) != matrix.shape[1] or len(set(names)) != len(names):
                raise ValueError(f"names: expected {matrix.shape[1]} distinct names (one per column), got {names!r}")
            if self.feature_names is not None:  # known names keep their column; new ones are appended
                vocabulary = list(self.feature_names)
                column = {name: index for index, name in enumerate(vocabulary)}
                for name in names:
                    if name not in column:
                        column[name] = len(vocabulary)
                        vocabulary.append(name)
                coo = matrix.tocoo()
                columns = np.array([column[name] for name in names], dtype=np.int64)
                matrix = sp.csr_matrix(
                    (coo.data, (coo.row, columns[coo.col])), shape=(matrix.shape[0], len(vocabulary))
                )
                names = vocabulary
            self.feature_names = names
        matrix.eliminate_zeros()
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        matrix.sort_indices()
        self.item_features = matrix
        network = self.network
        if network is not None and network.feature_embedding is not None:
            self._grow_features(matrix.shape[1])
            network.set_feature_slots(self._feature_slots(network.item_embedding.num_embeddings - 1))
        return self

    def _n_features(self) -> int:
        """Feature columns the next ``fit`` will learn embeddings for (0 = id-only)."""
        features = self.item_features
        if not self.config.side_features or features is None or features.nnz == 0:
            return 0
        return int(features.shape[1])

    def _feature_slots(self, n_items: int) -> np.ndarray:
        """``[n_items + 1, width]``: network row r's feature rows (feature + 1), 0-padded; row 0 is padding.

        Columns beyond the feature table (none unless features were added to an id-only table) are dropped.
        """
        network = self._net()
        if network.feature_embedding is None or self.item_features is None:
            raise RuntimeError("_feature_slots: the model has no side features")
        n_known = network.feature_embedding.num_embeddings - 1
        features = self.item_features[: min(n_items, self.item_features.shape[0])]
        features = features[:, :n_known].tocsr()
        lengths = np.zeros(n_items + 1, dtype=np.int64)
        lengths[1 : 1 + features.shape[0]] = np.diff(features.indptr)
        slots = np.zeros((n_items + 1, max(1, int(lengths.max()))), dtype=np.int64)
        rows = np.repeat(np.arange(n_items + 1), lengths)
        columns = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        slots[rows, columns] = features.indices + 1
        return slots

    # ------------------------------------------------------------------------------------------ training
    def _fit(self, interactions: Interactions, validation: RankingSplit | None = None) -> None:
        if validation is None:
            everything: Interactions | None = interactions
            interactions, held_out = hold_out_last(interactions)
        else:
            held_out = (validation.history, validation.targets)
            everything = with_held_out(interactions, validation)
        self._train(interactions, held_out, self.config.max_epochs)
        self.refit_epochs = 0
        if self.config.refit and everything is not None and self.best_epoch > 0:
            self.refit_on(everything)

    def refit_on(self, interactions: Interactions) -> Self:
        """Train afresh on ``interactions`` (the training and validation events) for ``best_epoch`` epochs.

        The final step of ``fit`` when ``refit`` is on: validation chose the epoch count, and the
        model then learns from every event it was given, the held-out ones included, which are each
        user's newest. Same seed, same initialisation; no early stopping (nothing is left to judge it).
        """
        if self.best_epoch < 1:
            raise RuntimeError("refit_on: no epoch count was chosen yet (call fit with validation first)")
        if interactions.n_items < self.n_items or interactions.n_users < self.n_users:
            n_users, n_items = max(self.n_users, interactions.n_users), max(self.n_items, interactions.n_items)
            interactions = interactions.with_sizes(n_users, n_items)
        selected = (self.best_epoch, self.best_validation_ndcg, self.history)
        self._train(interactions, None, self.best_epoch)
        self.best_epoch, self.best_validation_ndcg, self.history = selected
        self.refit_epochs = self.best_epoch
        self.n_users, self.n_items = interactions.n_users, interactions.n_items
        return self

    def _train(self, interactions: Interactions, held_out: tuple[Histories, Histories] | None, max_epochs: int) -> None:
        """Initialise (seeded) and train up to ``max_epochs``, keeping the epoch best on ``held_out`` if given."""
        config = self.config
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        n_features = self._n_features()
        self.network = SASRecNetwork(interactions.n_items, config, n_features)
        if n_features:
            self.network.set_feature_slots(self._feature_slots(interactions.n_items))
        self._init_weights()
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), weight_decay=config.weight_decay
        )
        self._steps = 0
        self._lr_scale = 1.0
        self.history = []
        self._set_sampling_distribution(interactions)
        histories = _trainable(Histories.from_interactions(interactions))
        best_ndcg, best_state, best_epoch, waited = -1.0, None, 0, 0
        started = time.perf_counter()
        bar = tqdm(total=max_epochs, desc="sasrec", unit="epoch", disable=not self.progress, leave=False)
        with torch_threads(config.n_threads), bar:
            for epoch in range(1, max_epochs + 1):
                loss = self._train_epoch(histories, rng, shuffle=True)
                bar.update()
                if held_out is None or (epoch % config.eval_every and epoch != max_epochs):
                    self.history.append({"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started})
                    continue
                ndcg = self._validation_ndcg(*held_out)
                self.history.append(
                    {"epoch": epoch, "loss": loss, "val_ndcg@10": ndcg, "seconds": time.perf_counter() - started}
                )
                if config.verbose:
                    print(
                        f"epoch {epoch:4d} loss {loss:.4f} val ndcg@10 {ndcg:.4f} "
                        f"({time.perf_counter() - started:.1f}s)",
                        flush=True,
                    )
                bar.set_postfix(loss=f"{loss:.3f}", val_ndcg=f"{ndcg:.4f}")
                if ndcg > best_ndcg:
                    best_ndcg, best_epoch, waited = ndcg, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
                else:
                    waited += config.eval_every
                    if waited >= config.patience:
                        break
                    if config.plateau_factor < 1.0 and waited % config.plateau_patience == 0:
                        self._lr_scale *= config.plateau_factor
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.best_epoch, self.best_validation_ndcg = best_epoch, best_ndcg

    def _partial_fit(self, interactions: Interactions) -> None:
        """Continue from the current weights on the sequences in ``interactions``; grow the item table."""
        self._partial_fit_in_context(interactions, None)

    def _partial_fit_in_context(self, interactions: Interactions, learn: np.ndarray | None) -> None:
        """:meth:`_partial_fit` with a loss only at the positions whose next item is a ``learn`` event;
        the other events are read as context (None: a loss at every position)."""
        config = self.config
        self._grow_items(interactions.n_items)
        rng = np.random.default_rng(config.seed + 1 + self._steps)
        new = interactions if learn is None else interactions.subset(learn)
        self._set_sampling_distribution(new, blend=True)
        histories = Histories.from_interactions(interactions)
        flags = None
        if learn is not None:  # the same (user, time) order as the histories' events
            order = np.lexsort((interactions.timestamps, interactions.user_ids))
            flags = Histories(histories.users, histories.indptr, learn[order].astype(np.int64))
        trainable = np.flatnonzero(histories.lengths() >= 2)
        if len(trainable) == 0:
            return
        histories = histories.select(trainable)
        flags = None if flags is None else flags.select(trainable)
        with torch_threads(config.n_threads):
            for _ in range(config.partial_fit_epochs):
                self._train_epoch(histories, rng, flags)

    def _init_weights(self) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        for name, parameter in self._net().named_parameters():
            if parameter.dim() >= 2:
                with torch.no_grad():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
                    if "item_embedding" in name or "feature_embedding" in name:
                        parameter[0].zero_()  # padding rows

    def _set_sampling_distribution(self, interactions: Interactions, blend: bool = False) -> None:
        counts = np.bincount(interactions.item_ids, minlength=interactions.n_items).astype(np.float64)
        if blend and len(self.item_log_q):
            old = np.exp(self.item_log_q) * len(interactions)
            counts[: len(old)] += old
        weights = (counts + 1.0) ** 0.75
        self.item_log_q = np.log(weights / weights.sum())

    def _train_epoch(
        self, histories: Histories, rng: np.random.Generator, learn: Histories | None = None, shuffle: bool = False
    ) -> float:
        """One pass over every user's window; batches group users of similar length (little padding).

        ``learn``: per item of ``histories``, 1 if it is to be learned as a target, 0 if it is context
        only (the positions predicting it get no loss; a batch with no target to learn is skipped).
        ``shuffle``: reorder each run of items logged at most ``shuffle_gap_s`` apart, at random, for
        this epoch (when that is set; full training only: see :func:`_shuffled_runs`).

        The loop is shared with distributed training (``liverec.models.distributed``), which overrides
        the four ``_batch_*`` / ``_epoch_*`` hooks below: its ranks draw the same batches from ``rng`` and
        each trains its share of every batch.
        """
        network, optimizer, config = self._net(), self._optimizer(), self.config
        network.train()
        windows, take = _windows(histories, config.max_len + 1, rng if config.crop == "random" else None)
        if shuffle and config.shuffle_gap_s is not None and windows.timestamps is not None:
            take = take[_shuffled_runs(windows, config.shuffle_gap_s, rng)]
            windows = Histories(windows.users, windows.indptr, histories.items[take], windows.timestamps)
        lengths = windows.lengths()
        ties = None  # which items are close enough in time to the one before to share a window
        if config.window > 1 and config.window_gap_s is not None:
            ties = _tie_flags(windows, config.window_gap_s)
        targets_to_learn = None  # per window: how many of its targets (items after the first) are learned
        if learn is not None:
            learn = Histories(windows.users, windows.indptr, learn.items[take])
            flags = learn.items.copy()
            flags[windows.indptr[:-1]] = 0  # a window's first item is never a target
            targets_to_learn = np.add.reduceat(flags, windows.indptr[:-1]) if len(flags) else flags
        # sort by length with random tie order, cut into batches, visit batches in random order
        by_length = np.lexsort((rng.random(len(lengths)), lengths))
        batches = [by_length[i : i + config.batch_size] for i in range(0, len(by_length), config.batch_size)]
        loss_rng = self._epoch_loss_rng(rng)
        total, count = 0.0, 0
        for index in rng.permutation(len(batches)):
            if targets_to_learn is not None and not targets_to_learn[batches[index]].any():
                continue  # nothing to learn in the whole batch (decided before sharing it out across ranks)
            rows, weight = self._batch_share(batches[index], lengths)
            width = int(lengths[rows].max())
            batch = self._batch_tensor(padded_sequences(windows.select(rows), width))
            # padded like the items, flags come back + 1: 2 = tied to the item before, 1 = not, 0 = padding
            tied = None if ties is None else self._batch_tensor(padded_sequences(ties.select(rows), width)) == 2
            inputs, targets = batch[:, :-1], batch[:, 1:]
            hidden, table = self._batch_forward(inputs)  # hidden at non-padding positions, the item table used
            seen, future = self._loss_context(batch, tied)
            targets = targets[inputs > 0]
            if learn is not None:  # keep the positions whose next item is to be learned (flag + 1 == 2)
                learned = self._batch_tensor(padded_sequences(learn.select(rows), width))[:, 1:] == 2
                keep = learned[inputs > 0]
                hidden, targets = hidden[keep], targets[keep]
                future = None if future is None else future[keep]
                seen = None if seen is None else SeenItems(seen.sequences, seen.row[keep], seen.column[keep])
            loss = self._loss(hidden, targets, loss_rng, table[1:], seen, future)
            self._steps += 1
            scale = min(1.0, self._steps / config.warmup_steps) if config.warmup_steps > 0 else 1.0
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * scale * self._lr_scale
            optimizer.zero_grad(set_to_none=True)
            (loss if weight == 1.0 else loss * weight).backward()
            optimizer.step()
            if weight > 0:
                total += float(loss.detach()) * len(hidden)
                count += len(hidden)
        return self._epoch_mean_loss(total, count, rng)

    # hooks of the training loop (one process: the whole batch, on the CPU, the epoch's own generator)
    def _batch_share(self, rows: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """The rows of a batch this process trains, and the weight of its loss in the batch's gradient."""
        return rows, 1.0

    def _batch_tensor(self, batch: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(batch)

    def _batch_forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the non-padding positions ``[n, dim]`` and the item table ``[n_items + 1, dim]``
        they are scored against (built once per step: it feeds both the inputs and the output scores)."""
        network = self._net()
        table = network.item_table()
        return network(inputs, table)[inputs > 0], table

    def _epoch_loss_rng(self, rng: np.random.Generator) -> np.random.Generator:
        """The generator the loss draws negatives from."""
        return rng

    def _loss_context(
        self, batch: torch.Tensor, tied: torch.Tensor | None = None
    ) -> tuple[SeenItems | None, torch.Tensor | None]:
        """What ``loss_exclude_seen`` / ``future_window`` add to a batch ``[batch, width]`` (inputs and
        targets shifted by one), at the non-padding input positions in row-major order: the items
        seen up to each position (or None), and ``[n, future_window]`` network rows of the next items
        (0 past a row's end; None for the plain next-item loss). ``tied`` ``[batch, width]``: whether
        each item has the timestamp of the item before it; given, an item after the next is a target
        only while every item from the next one to it is tied in time to the one before (``window_gap_s``)."""
        config = self.config
        window = config.window
        if not config.excludes_seen and window == 1:
            return None, None
        inputs = batch[:, :-1]
        is_item = inputs > 0
        seen = None
        if config.excludes_seen:
            row, column = is_item.nonzero(as_tuple=True)
            seen = SeenItems(inputs, row, column)
        future = None
        if window > 1:
            k, width = window, inputs.shape[1]
            ahead = F.pad(batch, (0, k - 1))  # [batch, width + k - 1]
            columns = [ahead[:, j : j + width] for j in range(1, k + 1)]
            if tied is not None:
                ahead_tied = F.pad(tied, (0, k - 1))
                together = torch.ones_like(is_item)
                for j in range(2, k + 1):  # target j counts while items 1..j after the position are tied
                    together = together & ahead_tied[:, j : j + width]
                    columns[j - 1] = columns[j - 1] * together
            future = torch.stack(columns, dim=-1)[is_item]
        return seen, future

    def _epoch_mean_loss(self, total: float, count: int, rng: np.random.Generator) -> float:
        return total / max(count, 1)

    def _loss(
        self,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        rng: np.random.Generator,
        items: torch.Tensor,
        seen: SeenItems | None = None,
        future: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``hidden``: ``[n, dim]`` at non-padding positions; ``targets``: ``[n]`` network rows of the next
        items; ``items``: ``[n_items, dim]`` the output item table; ``seen`` / ``future``: see
        :meth:`_loss_context` (full softmax only)."""
        loss_name = self.config.loss
        if loss_name == "softmax":
            dtype = torch.bfloat16 if self.config.logits_dtype == "bfloat16" else hidden.dtype
            window = targets[:, None] if future is None else future
            loss: torch.Tensor = _SoftmaxWindowLoss.apply(hidden, items, window, seen, dtype)
            return loss
        if loss_name == "sampled-softmax":
            n_items = items.shape[0]
            probabilities = np.exp(self.item_log_q)
            negatives = rng.choice(
                n_items, size=min(self.config.n_negatives, n_items), p=probabilities / probabilities.sum()
            )
            negatives_t = torch.from_numpy(negatives)
            log_q = torch.from_numpy(self.item_log_q).to(hidden.dtype)
            positive = (hidden * items[targets - 1]).sum(-1, keepdim=True) - log_q[targets - 1, None]
            negative = hidden @ items[negatives_t].T - log_q[negatives_t][None, :]  # [n, n_negatives]
            negative = negative.masked_fill(negatives_t[None, :] == (targets[:, None] - 1), float("-inf"))
            logits = torch.cat([positive, negative], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        negatives_t = torch.from_numpy(rng.integers(0, items.shape[0], size=len(targets)))
        positive = (hidden * items[targets - 1]).sum(-1)
        negative = (hidden * items[negatives_t]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            positive, torch.ones_like(positive)
        ) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))

    def _validation_ndcg(self, history: Histories, targets: Histories) -> float:
        """Mean NDCG@10 of each row's first target, full ranking, history items excluded.

        Users are scored in chunks of at most ~32M scores, so a large catalogue never needs a
        ``[users, items]`` matrix in memory at once.
        """
        if len(history) == 0:
            return 0.0
        first_targets = targets.items[targets.indptr[:-1]]
        chunk = max(1, 32_000_000 // max(self.n_items, 1))
        total = 0.0
        for start in range(0, len(history), chunk):
            rows = np.arange(start, min(start + chunk, len(history)))
            part = history.select(rows)
            scores = self._score(part)
            n_cols = max(self.n_items, int(part.items.max(initial=-1)) + 1)
            seen = part.to_csr(n_cols)[:, : self.n_items].tocoo()
            scores[seen.row, seen.col] = -np.inf
            total += single_target_ndcg(scores, first_targets[rows]) * len(rows)
        return total / len(history)

    # ------------------------------------------------------------------------------------------ scoring
    def user_vectors(self, histories: Histories) -> np.ndarray:
        """``[len(histories), dim]``: each row's representation (hidden state at its last position)."""
        network = self._net()
        known = histories
        if len(known.items) and known.items.max() >= self.n_items:  # items beyond the table are skipped
            keep = known.items < self.n_items
            rows = np.repeat(np.arange(len(known)), known.lengths())
            lengths = np.bincount(rows[keep], minlength=len(known))
            known = Histories(known.users, np.concatenate([[0], np.cumsum(lengths)]), known.items[keep])
        if network.training:  # .eval() walks every submodule: ~0.25 ms, an eighth of a served request
            network.eval()
        if len(known) == 1:  # the serving path: one user, no sorting or chunking
            recent = known.items[-self.config.max_len :] + 1
            sequence = torch.from_numpy(recent if len(recent) else np.zeros(1, dtype=np.int64))[None]
            with torch.inference_mode():
                return network(sequence, last_only=True)[:, -1, :].numpy().copy()
        # rows sorted by length and run in chunks padded to the chunk's longest row: little padding
        lengths = np.minimum(known.lengths(), self.config.max_len)
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(known), self.config.dim), dtype=np.float32)
        with torch.inference_mode():
            table = network.item_table() if network.feature_embedding is not None else None
            for start in range(0, len(order), 256):
                rows = order[start : start + 256]
                width = int(max(1, lengths[rows].max()))
                sequences = torch.from_numpy(padded_sequences(known.select(rows), width))
                out[rows] = network(sequences, table, last_only=True)[:, -1, :].numpy()
        return out

    def item_vectors(self) -> np.ndarray:
        """``[n_items, dim]``: the item table scores are dot products with."""
        return self._net().item_vectors().detach().numpy()

    def _score(self, histories: Histories) -> np.ndarray:
        with torch_threads(self.config.n_threads), torch.inference_mode():
            users = torch.from_numpy(self.user_vectors(histories))
            scores = users @ self._net().item_vectors().T
        return scores.numpy().astype(np.float32, copy=False)

    # ------------------------------------------------------------------------------------------ growth & state
    def _grow_items(self, n_items: int) -> None:
        """Append rows for new items; keep the AdamW state of old rows (new rows start with zero moments).

        A new item starts at the centroid of the known items that share its side features (the mean,
        over its features, of each feature's mean item vector) when it has features the model has
        seen on items; otherwise at the mean item vector. With features, its id row is that start
        minus its feature part, so :meth:`item_vectors` returns the start itself.
        """
        network = self._net()
        old = network.item_embedding.weight
        n_old = old.shape[0] - 1
        if n_items <= n_old:
            return
        with torch.no_grad():
            if network.feature_embedding is None:
                self._append_rows(network.item_embedding, old[1:].mean(dim=0, keepdim=True).expand(n_items - n_old, -1))
                return
            starts = self._new_item_starts(network.item_vectors().detach().numpy(), n_items)
            self._append_rows(network.item_embedding, torch.zeros(n_items - n_old, old.shape[1]))
            network.set_feature_slots(self._feature_slots(n_items))
            network.item_embedding.weight[n_old + 1 :] = torch.from_numpy(starts) - network.feature_vectors()[n_old:]

    def _new_item_starts(self, old_vectors: np.ndarray, n_items: int) -> np.ndarray:
        """``[n_items - n_old, dim]`` initial vectors of new items from ``old_vectors`` ``[n_old, dim]``."""
        n_old = old_vectors.shape[0]
        old64 = old_vectors.astype(np.float64)
        mean = old64.mean(axis=0)
        starts = np.tile(mean, (n_items - n_old, 1))
        features, network = self.item_features, self._net()
        if features is None or network.feature_embedding is None or features.shape[0] <= n_old:
            return starts.astype(np.float32)
        n_known = network.feature_embedding.num_embeddings - 1
        features = features[:, :n_known].tocsr()
        described = features[:n_old]  # [n_described_old, n_known]
        counts = np.asarray(described.sum(axis=0)).ravel()  # old items per feature
        centroids = (described.T @ old64[: described.shape[0]]) / np.maximum(counts, 1)[:, None]  # [n_known, dim]
        new = features[n_old:n_items] @ sp.diags((counts > 0).astype(np.float64))  # features seen on old items
        usable = np.asarray(new.sum(axis=1)).ravel()
        rows = np.flatnonzero(usable > 0)
        starts[rows] = (new[rows] @ centroids) / usable[rows, None]
        return starts.astype(np.float32)

    def _grow_features(self, n_features: int) -> None:
        """Append feature rows (at the mean feature vector) for feature columns the table lacks."""
        embedding = self._net().feature_embedding
        if embedding is None or n_features <= embedding.num_embeddings - 1:
            return
        with torch.no_grad():
            weight = embedding.weight
            mean = weight[1:].mean(dim=0, keepdim=True)
            self._append_rows(embedding, mean.expand(n_features + 1 - weight.shape[0], -1))

    def _append_rows(self, module: nn.Embedding | nn.EmbeddingBag, rows: torch.Tensor) -> None:
        """Replace ``module.weight`` by itself plus ``rows`` ``[n_new, dim]``; AdamW moments of old rows are kept."""
        optimizer = self._optimizer()
        old = module.weight
        grown = nn.Parameter(torch.cat([old.detach(), rows], dim=0))
        module.weight = grown
        module.num_embeddings = grown.shape[0]
        state = optimizer.state.pop(old, None)
        for group in optimizer.param_groups:
            group["params"] = [grown if p is old else p for p in group["params"]]
        if state:  # new rows start from zero moments
            optimizer.state[grown] = {
                key: torch.cat([value, value.new_zeros(len(rows), *value.shape[1:])])
                if torch.is_tensor(value) and value.dim() == 2
                else value
                for key, value in state.items()
            }

    def _net(self) -> SASRecNetwork:
        if self.network is None:
            raise RuntimeError(f"model {self.name!r} is not fitted: call fit first")
        return self.network

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise RuntimeError(f"model {self.name!r} has no optimiser: call fit first")
        return self.optimizer

    def _get_state(self) -> dict[str, np.ndarray]:
        state = {f"network.{k}": v.detach().numpy() for k, v in self._net().state_dict().items()}
        state["item_log_q"] = self.item_log_q
        if self.item_features is not None:
            state["item_features.indptr"] = self.item_features.indptr.astype(np.int64)
            state["item_features.indices"] = self.item_features.indices.astype(np.int64)
            state["item_features.shape"] = np.array(self.item_features.shape, dtype=np.int64)
        if self.feature_names is not None:
            state["feature_names"] = np.array(self.feature_names, dtype=np.str_)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        n_items = state["network.item_embedding.weight"].shape[0] - 1
        self.item_features = None
        if "item_features.shape" in state:
            indices = state["item_features.indices"]
            self.item_features = sp.csr_matrix(
                (np.ones(len(indices), dtype=np.float32), indices, state["item_features.indptr"]),
                shape=tuple(int(x) for x in state["item_features.shape"]),
            )
        self.feature_names = [str(name) for name in state["feature_names"]] if "feature_names" in state else None
        feature_weight = state.get("network.feature_embedding.weight")
        n_features = 0 if feature_weight is None else feature_weight.shape[0] - 1
        self.network = SASRecNetwork(n_items, self.config, n_features)
        if n_features:
            self.network.set_feature_slots(self._feature_slots(n_items))
        self.network.load_state_dict(
            {
                k.removeprefix("network."): torch.from_numpy(np.array(v))
                for k, v in state.items()
                if k.startswith("network.")
            }
        )
        self.item_log_q = state["item_log_q"]
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(),
            lr=self.config.learning_rate,
            betas=(0.9, 0.98),
            weight_decay=self.config.weight_decay,
        )


def _trainable(histories: Histories) -> Histories:
    """Rows with at least two items (one input, one target)."""
    return histories.select(np.flatnonzero(histories.lengths() >= 2))


def _windows(histories: Histories, length: int, rng: np.random.Generator | None) -> tuple[Histories, np.ndarray]:
    """Each row cut to a window of at most ``length`` consecutive items: the last one, or a random one;
    and the indices of the windows' items in ``histories.items``."""
    lengths = histories.lengths()
    size = np.minimum(lengths, length)
    end = histories.indptr[1:].copy()
    if rng is not None:
        slack = lengths - size  # how far back a window may start
        end -= (rng.random(len(lengths)) * (slack + 1)).astype(np.int64)
    start = end - size
    take = concat_ranges(start, size)
    timestamps = None if histories.timestamps is None else histories.timestamps[take]
    windows = Histories(histories.users, np.concatenate([[0], np.cumsum(size)]), histories.items[take], timestamps)
    return windows, take


def _shuffled_runs(histories: Histories, gap_s: float, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``histories.items`` that shuffles each run of consecutive items of a row that
    came at most ``gap_s`` seconds after the one before (0: the same timestamp), and moves nothing across
    runs or rows. The timestamps stay where they are, so the runs (and the loss windows) keep their place.

    A log's order within such a run is often arbitrary (ml-100k: 51 % of consecutive ratings share a
    timestamp), and a model trained on one fixed order learns it as if it meant something; a fresh
    order each epoch is an augmentation that says it does not. Only full training shuffles: an online
    update's history from the state has no real times (see ``UNKNOWN_PAST``) and would be one run.
    """
    n = len(histories.items)
    starts = _tie_flags(histories, gap_s).items == 0  # where a run begins; without times, every item
    starts[histories.indptr[:-1][histories.lengths() > 0]] = True  # and each row's first item
    if starts.all():  # nothing to shuffle: no random numbers drawn, so training is as without shuffling
        return np.arange(n)
    return np.lexsort((rng.random(n), np.cumsum(starts)))


def _tie_flags(histories: Histories, gap_s: float = 0.0) -> Histories:
    """The same rows with, for items, 1 where an item came at most ``gap_s`` seconds after the item
    before it (0: at the same timestamp), else 0.

    Without timestamps every flag is 0: the order is taken as exact. A row's first flag is never read.
    """
    flags = np.zeros(len(histories.items), dtype=np.int64)
    if histories.timestamps is not None and len(flags) > 1:
        flags[1:] = np.diff(histories.timestamps) <= gap_s
    return Histories(histories.users, histories.indptr, flags)
