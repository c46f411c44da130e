"""Top-k retrieval over the catalogue with allowed-item filters (see docs/architecture.md, "The running engine").

Score-vector models (popularity, ItemKNN) go through :func:`top_k_allowed`; vector models (SASRec) through
:class:`VectorIndex`, exact below ``ann_threshold`` items (from a float16 copy with a float32 re-rank above
``compact_threshold``) and FAISS IVF or HNSW (``ann_kind``) above. Both never return a disallowed
item, return exactly ``k`` items whenever ``k`` are allowed, and break ties towards the lower item id.
"""

from liverec.retrieval.allowed import AllowedBase, AllowedItems
from liverec.retrieval.index import ANN_KINDS, AnnKind, Metric, VectorIndex, exact_recall, limit_threads
from liverec.retrieval.topk import top_k_allowed

__all__ = [
    "ANN_KINDS",
    "AllowedBase",
    "AllowedItems",
    "AnnKind",
    "Metric",
    "VectorIndex",
    "exact_recall",
    "limit_threads",
    "top_k_allowed",
]
