"""SASRec's torch modules: the dropout it uses, the pre-LayerNorm causal Transformer block and the network."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from liverec.models.sasrec.config import SASRecConfig


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn as uniform floats compared with ``p``: the same Bernoulli(1 - p)
    mask in distribution, drawn about twice as fast on CPU as by torch's ``bernoulli_`` (docs/results.md)."""

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

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, tail: int | None = None) -> torch.Tensor:
        """``x``: ``[batch, seq_len, dim]`` -> ``[batch, seq_len, dim]`` (``[batch, tail, dim]`` with ``tail``).

        ``attention_mask`` ``[batch, 1, seq_len, seq_len]`` (additive: 0 = may attend, -inf = may not):
        position t sees the non-padding positions <= t, so the result does not depend on how much
        padding a row has; ``None`` when no row has padding (plain causal attention).
        ``tail``: compute the outputs of the last ``tail`` positions alone (their queries against every key),
        which is all the final block must produce for a user vector (1) or for a loss whose positions all lie in
        the last ``tail`` columns (an update's new events): the other positions' queries, attention output and
        feed-forward are skipped. Each output is the one the full pass gives at its position.
        """
        batch, seq_len, dim = x.shape
        head_dim = dim // self.n_heads
        normed = self.attention_norm(x)
        is_causal = attention_mask is None
        if tail is not None and tail < seq_len:
            weight, bias = self.query_key_value.weight, self.query_key_value.bias
            query = F.linear(normed[:, -tail:], weight[:dim], bias[:dim])
            key_value = F.linear(normed, weight[dim:], bias[dim:])
            query = query.view(batch, tail, self.n_heads, head_dim).transpose(1, 2)
            key_value = key_value.view(batch, seq_len, 2, self.n_heads, head_dim).permute(2, 0, 3, 1, 4)
            keys, values = key_value[0], key_value[1]
            if attention_mask is not None:
                attention_mask = attention_mask[:, :, -tail:]
            elif tail > 1:  # query i (column seq_len - tail + i) sees the keys up to its own column
                attention_mask = torch.ones(tail, seq_len, dtype=torch.bool, device=x.device).tril(seq_len - tail)
            x, seq_len, is_causal = x[:, -tail:], tail, False  # a lone last query sees every key: no mask
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
            is_causal=is_causal,
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
        self, sequences: torch.Tensor, table: torch.Tensor | None = None, tail: int | None = None
    ) -> torch.Tensor:
        """``sequences``: ``[batch, seq_len]`` item rows, left-padded with 0 -> hidden ``[batch, seq_len, dim]``.

        Positions are counted from the right edge (the newest item always has position ``max_len - 1``),
        so a batch padded to its own longest row gives the same result as one padded to ``max_len``.
        ``table``: :meth:`item_table` if already computed (see :meth:`embed`). ``tail``: return only the
        last ``tail`` positions, ``[batch, tail, dim]`` (1: the user vector; an update: the columns of its new
        events), skipping the final block's work for the other positions (at 2 blocks, a third less compute for
        a user vector).
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
            if tail is not None and n == last:
                return self.final_norm(block(x, attention_mask, tail=tail) * not_padding[:, -tail:])
            x = block(x, attention_mask) * not_padding
        return self.final_norm(x if tail is None else x[:, -tail:])

    def item_vectors(self) -> torch.Tensor:
        """``[n_items, dim]``: the output item table (padding row dropped), side features included."""
        return self.item_table()[1:]

    def feature_vectors(self) -> torch.Tensor:
        """``[n_items, dim]``: the side-feature part of each item's vector (zeros without features)."""
        if self.feature_embedding is None:
            return torch.zeros_like(self.item_embedding.weight[1:])
        return self.feature_embedding(self.feature_slots[1:])
