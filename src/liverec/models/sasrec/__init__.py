"""SASRec, LiveRec's main model: a causal self-attention sequence recommender (see :mod:`.model`).

Modules: :mod:`.config` (hyperparameters), :mod:`.network` (torch modules), :mod:`.loss` (training
losses), :mod:`.batching` (how an epoch's data is cut into batches), :mod:`.training` (the training
strategy: one process or a distributed job), :mod:`.model` (the :class:`SASRec` recommender) and
:mod:`.distributed` (training with PyTorch DDP under ``torchrun``; imported on demand).
"""

from liverec.models.sasrec.batching import padded_sequences
from liverec.models.sasrec.config import LOSSES, SASRecConfig
from liverec.models.sasrec.loss import SeenItems
from liverec.models.sasrec.model import SASRec
from liverec.models.sasrec.network import Dropout, SASRecNetwork, TransformerBlock
from liverec.models.sasrec.training import LocalTraining, Training

__all__ = [
    "LOSSES",
    "Dropout",
    "LocalTraining",
    "SASRec",
    "SASRecConfig",
    "SASRecNetwork",
    "SeenItems",
    "Training",
    "TransformerBlock",
    "padded_sequences",
]
