"""SASRec with the sampled softmax: a dense AdamW fit against a row-wise one (``row_wise_from=1``: each step reads
and steps only the item rows its batch uses) — fit seconds and validation NDCG@10, one JSON line per fit.

A synthetic stream (``N_ITEMS`` items, 15 events per item, up to 50,000 users, generator seed 0); each user's last
event is held out (5,000 of those users scored: full ranking, seen items excluded); the fit runs ``EPOCHS``
epochs with its own early-stopping hold-out and refit (so a fit is twice ``EPOCHS`` epochs plus a validation).

    OMP_NUM_THREADS=1 python benchmarks/bench_sasrec_row_wise.py N_ITEMS SEEDS EPOCHS     # e.g. 100000 0,1 1
"""

import json
import os
import sys
import time

import numpy as np
import torch

from liverec.data.splits import hold_out_last
from liverec.data.synthetic import SyntheticConfig, generate
from liverec.models.sasrec import SASRec

torch.set_num_threads(1)
n_items = int(sys.argv[1])
seeds = [int(s) for s in sys.argv[2].split(",")]
epochs = int(sys.argv[3])
dataset, _ = generate(SyntheticConfig(n_users=min(50_000, 5 * n_items), n_items=n_items, n_events=15 * n_items, seed=0))
train, (history, targets) = hold_out_last(dataset.interactions)
rows = np.random.default_rng(0).choice(len(history), size=min(5000, len(history)), replace=False)
history, targets = history.select(np.sort(rows)), targets.select(np.sort(rows))
for seed in seeds:
    for row_wise_from in (None, 1):
        m = SASRec(
            loss="sampled-softmax", max_epochs=epochs, max_len=50, n_threads=1, seed=seed, row_wise_from=row_wise_from
        )
        t = time.perf_counter()
        m.fit(train)
        fit_s = time.perf_counter() - t
        print(
            json.dumps(
                {
                    "items": n_items,
                    "seed": seed,
                    "row_wise": row_wise_from is not None,
                    "epochs": epochs,
                    "fit_s": round(fit_s, 1),
                    "val_ndcg10": round(m.validation_ndcg(history, targets), 4),
                    "load": os.getloadavg()[0],
                }
            ),
            flush=True,
        )
