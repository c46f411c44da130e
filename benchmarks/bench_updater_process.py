"""The whole updater process, not just the learner: events/s of :class:`liverec.online.updater.Updater`.

What one updater does per event here: read it from the SQLite log, rank it with the candidate and the
serving version for the evaluation gate (test-then-train), observe it, learn it in an update every
``--every-events`` events (affected users' sequences + replay), register each update as a version
(model files written) and promote or reject it. ``bench_updater.py`` measures the learner alone.

Setting: MovieLens 100K in time order. The first ``--pretrain-fraction`` of the events is imported and
SASRec (defaults, ``--pretrain-epochs`` epochs) trained and registered; then the rest is imported, and
one ``Updater`` with one torch thread works through it with ``step()`` until it has processed the whole
log: a backlog, so the gate ranks the sample that holds ranking to ``--gate-max-share`` of the
time (``none``: every event, or ``--gate-sample-rate`` of them). Reports events/s by wall time and by
the CPU time of this process (one thread: what one core delivers even when other jobs share the
machine), versions registered, promoted and rejected, the gate's median sampling rate.

    python benchmarks/bench_updater_process.py [--data ../shared/data/ml-100k] [--every-events 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from liverec.data.loaders import load_dataset
from liverec.events.log import SQLiteEventLog
from liverec.online.updater import Updater, UpdaterConfig
from liverec.pipeline import import_dataset, read_log, train_and_register
from liverec.registry import ModelRegistry
from liverec.state.store import DEFAULT_EVENT_WEIGHTS

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pretrain-fraction", type=float, default=0.5)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--every-events", type=int, default=1000)
    parser.add_argument("--gate-events", type=int, default=500)
    parser.add_argument("--gate-sample-rate", type=float, default=1.0, help="fraction of events the gate ranks")
    parser.add_argument(
        "--gate-max-share",
        type=lambda text: None if text == "none" else float(text),
        default=UpdaterConfig.gate_max_share,
        help="while events wait, ranking's share of the updater's time ('none': always --gate-sample-rate)",
    )
    parser.add_argument(
        "--relearn-history",
        action="store_true",
        help="updates learn the affected users' earlier items again (default: context only)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    n_events = len(dataset.interactions)
    n_pretrain = int(n_events * args.pretrain_fraction)
    root = Path(tempfile.mkdtemp(prefix="liverec-updater-"))
    try:
        with SQLiteEventLog(root / "events.db") as log:
            import_dataset(dataset, log, source="ml", event_types=DEFAULT_EVENT_WEIGHTS, limit=n_pretrain)
            data = read_log(log, DEFAULT_EVENT_WEIGHTS)
            trained = train_and_register(
                data, ModelRegistry(root / "models"), "sasrec", {"max_epochs": args.pretrain_epochs, "n_threads": 1}
            )
            import_dataset(dataset, log, source="ml", event_types=DEFAULT_EVENT_WEIGHTS)  # the rest (idempotent)
            last = log.last_offset()
        config = UpdaterConfig(
            every_events=args.every_events,
            every_seconds=None,
            gate_events=args.gate_events,
            gate_sample_rate=args.gate_sample_rate,
            gate_max_share=args.gate_max_share,
            relearn_history=args.relearn_history,
        )
        updater = Updater(root, DEFAULT_EVENT_WEIGHTS, config)
        assert updater.start()
        start_offset = updater.offset
        wall, cpu = time.perf_counter(), time.process_time()
        rates = []
        while updater.offset < last:
            judged = updater.gate is not None
            if updater.step() == 0:
                break
            if judged:
                rates.append(updater.gate_rate)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        processed = updater.offset - start_offset
        decisions = updater.decisions
        updater.close()
        manifests = ModelRegistry(root / "models").manifests()
        report = {
            "benchmark": "updater_process",
            "data": str(args.data),
            "setting": {
                "events": n_events,
                "pretrain_events": n_pretrain,
                "pretrain_epochs": args.pretrain_epochs,
                "pretrain_fit_s": round(trained.fit_seconds, 1),
                "every_events": args.every_events,
                "gate_events": args.gate_events,
                "gate_sample_rate": args.gate_sample_rate,
                "gate_max_share": args.gate_max_share,
                "relearn_history": args.relearn_history,
                "torch_threads": 1,
            },
            "events_processed": processed,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "events_per_s_wall": round(processed / wall),
            "events_per_s_cpu": round(processed / cpu),
            "versions_registered": len(manifests) - 1,
            "gate_decisions": len(decisions),
            "promoted": sum(1 for d in decisions if d["promoted"]),
            "gate_rate_median": round(statistics.median(rates), 4) if rates else None,
            "events_read_per_decision": [d["events_read"] for d in decisions],
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
