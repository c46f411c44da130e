"""Off-policy evaluation on simulator logs (issue 19): do the 95 % intervals cover each target's true value?

For each seed, the simulator (:class:`liverec.simulation.Simulator`, MF by default) serves ``--horizon`` visits
through the serving engine with an exploring *logging* policy, keeping a :class:`~liverec.simulation.Context`
per visit (``record_contexts``); its data folder then holds the impressions and the joined click rewards exactly
as serving writes them. Two logs per seed, from the same past and first model:

* ``softmax`` logging (Plackett–Luce over the top ``candidates``): greedy and softmax targets (ε-greedy targets
  cannot be evaluated on it: serving logs ``n_eligible`` only for ε-greedy and cold lists);
* ``epsilon`` logging (ε-greedy slot replacement): greedy and ε-greedy targets (softmax targets would put mass
  on lists it never draws: a support deficit, not an estimate).

Each target is estimated from the data folder by ``liverec ope --data-dir D --policy ... --json`` (run in
process: the command's own code path), and its true value is :func:`liverec.simulation.true_value` on the
recorded contexts: the mean over the visits of the target's expected clicks per list under the simulator's click
model (examination(j) × relevance), computed on the candidates and scores the logging policy was handed at that
visit (the online model's scores at serving time, the same ones the impression logged). The OPE value is the
expected reward of a list, the sum of its slots' rewards, with a click weighing 1 (``reward_weights``): the same
quantity. Exact for greedy and ε-greedy; Monte Carlo for softmax (``--draws`` lists per visit; its standard
error is reported next to the estimates' and is negligible at the default). Before estimating, the script checks
that the two sides line up: every impression has its context, the impression's candidates' scores are the
context's, the shown items sit at the same candidate positions, the joined in-window rewards equal the
simulator's clicks visit by visit, and (ε-greedy) the logged ``n_eligible`` equals the context's eligible count.

Prints one JSON object: per log and seed each target's truth and estimates, and per level and estimator the
share of (target, seed) pairs whose interval covers the truth.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_ope_sim.py --seeds 0-2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverec.cli import main as cli_main
from liverec.events.impressions import list_reward
from liverec.events.log import SQLiteEventLog
from liverec.ope import parse_policy
from liverec.policies import ExploreConfig, create_policy
from liverec.simulation import Context, SimulationConfig, SimulationRun, Simulator, true_value

ESTIMATORS = ("ips", "snips", "dr", "dm")
LEVELS = ("item_level", "list_level")

#: Logging policy -> the targets evaluated on its log (the logging policy itself among them).
SOFTMAX_TARGETS = [
    "greedy",
    *(f"softmax:temperature={t},candidates=50" for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)),
    "softmax:temperature=0.1,candidates=10",
    "softmax:temperature=0.3,candidates=20",
]
EPSILON_TARGETS = ["greedy", *(f"epsilon:epsilon={e}" for e in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0))]


def default_config(horizon: int, model: str, temperature: float, epsilon: float) -> SimulationConfig:
    """The simulator's default world with ``model`` learning online, both logging policies' settings."""
    return SimulationConfig(
        horizon=horizon, model=model, explore=ExploreConfig(temperature=temperature, epsilon=epsilon, candidates=50)
    )


def ope_json(data_dir: Path, targets: Sequence[str]) -> dict[str, Any]:
    """``liverec ope --data-dir DATA_DIR --policy T ... --json``, in process."""
    argv = ["ope", "--data-dir", str(data_dir), "--json"]
    for target in targets:
        argv += ["--policy", target]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    if code != 0:
        raise RuntimeError(f"liverec ope exited {code}")
    result: dict[str, Any] = json.loads(out.getvalue())
    return result


def alignment(run: SimulationRun) -> dict[str, Any]:
    """Checks that the log and the recorded contexts describe the same visits (see the module docstring)."""
    assert run.data_dir is not None
    contexts: dict[str, tuple[int, Context]] = {c.recommendation_id: (v, c) for v, c in enumerate(run.contexts)}
    with SQLiteEventLog(run.data_dir / "events.db", readonly=True) as log:
        impressions = [impression for batch in log.iter_impressions() for impression in batch]
        rewards = log.get_rewards_many([impression.recommendation_id for impression in impressions])
    score_diff, position_mismatch, reward_mismatch, eligible_mismatch, missing = 0.0, 0, 0, 0, 0
    for impression in impressions:
        found = contexts.get(impression.recommendation_id)
        if found is None:
            missing += 1
            continue
        visit, context = found
        n = len(impression.candidates)
        handed = np.asarray(context.candidates.scores[:n], dtype=np.float64)
        logged = np.array([math.nan if s is None else s for s in impression.candidate_scores])
        if n:
            score_diff = max(score_diff, float(np.nanmax(np.abs(handed - logged))))
        ranked = list(np.asarray(context.candidates.items[:n]).tolist())
        logged_positions = [
            impression.candidates.index(i) if i in impression.candidates else -1 for i in impression.items
        ]
        context_positions = [ranked.index(i) if i in ranked else -1 for i in context.shown.tolist()]
        position_mismatch += logged_positions != context_positions
        total = list_reward(impression, rewards.get(impression.recommendation_id, []))["reward"]
        reward_mismatch += int(total != int(run.clicks[visit]))
        if impression.n_eligible is not None and context.candidates.eligible is not None:
            eligible_mismatch += impression.n_eligible != int(context.candidates.eligible.sum())
    return {
        "impressions": len(impressions),
        "contexts": len(run.contexts),
        "impressions_without_context": missing,
        "max_candidate_score_difference": score_diff,
        "lists_with_shown_positions_differing": position_mismatch,
        "lists_with_reward_differing_from_clicks": reward_mismatch,
        "lists_with_n_eligible_differing": eligible_mismatch,
        "clicks": int(run.clicks.sum()),
    }


def check_log(
    simulator: Simulator,
    logging: str,
    targets: Sequence[str],
    seed: int,
    prepared: Path,
    folder: Path,
    draws: int,
) -> dict[str, Any]:
    """One logged run and every target's estimates and truth."""
    started = time.perf_counter()
    run = simulator.run(logging, seed, folder / f"{logging}-{seed}", prepared=prepared, record_contexts=True)
    simulated = time.perf_counter() - started
    assert run.data_dir is not None
    checks = alignment(run)
    started = time.perf_counter()
    report = ope_json(run.data_dir, targets)
    estimated = time.perf_counter() - started
    started = time.perf_counter()
    rows = []
    for text, estimate in zip(targets, report["policies"], strict=True):
        target = parse_policy(text)
        truth = true_value(create_policy(target.name, target.config), run.contexts, n_draws=draws, seed=seed)
        row: dict[str, Any] = {
            "policy": estimate["policy"],
            "truth": truth.value,
            "truth_mc_se": truth.standard_error,
            "support_deficit": estimate["support_deficit"],
            "effective_lists": estimate["effective_lists"],
        }
        for level in LEVELS:
            row[level] = {
                name: {
                    **{key: estimate[level][name][key] for key in ("value", "standard_error", "low", "high")},
                    "covers": bool(estimate[level][name]["low"] <= truth.value <= estimate[level][name]["high"]),
                }
                for name in ESTIMATORS
            }
        rows.append(row)
    logged_label = create_policy(logging, simulator.config.explore)
    own = next((r for r in rows if r["policy"].split(":")[0] == logging and _same(r["policy"], logged_label)), None)
    return {
        "logging": logging,
        "seed": seed,
        "lists": report["policies"][0]["lists"],
        "observed_reward": report["policies"][0]["observed_reward"],
        "expected_reward_of_served_lists": float(run.expected.mean()),
        "logging_policy_ips_minus_observed": (
            None if own is None else own["item_level"]["ips"]["value"] - report["policies"][0]["observed_reward"]
        ),
        "alignment": checks,
        "targets": rows,
        "seconds": {"simulate": simulated, "ope": estimated, "truth": time.perf_counter() - started},
    }


def _same(label: str, policy: Any) -> bool:
    settings = policy.settings()
    text = policy.name + (":" + ",".join(f"{k}={v}" for k, v in settings.items()) if settings else "")
    return label == text


def coverage(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per level and estimator: the share of (target, seed) pairs whose interval covers the truth."""
    out: dict[str, Any] = {}
    for level in LEVELS:
        out[level] = {}
        for name in ESTIMATORS:
            hits = [row[level][name]["covers"] for result in results for row in result["targets"]]
            out[level][name] = {"covered": int(sum(hits)), "of": len(hits), "share": sum(hits) / len(hits)}
    return out


def per_seed(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per seed (every target of both logs), level and estimator: the share of targets covered."""
    seeds = sorted({result["seed"] for result in results})
    return {
        str(seed): {
            level: {name: share["share"] for name, share in found.items()}
            for level, found in coverage([r for r in results if r["seed"] == seed]).items()
        }
        for seed in seeds
    }


def mc_ratio(results: Sequence[dict[str, Any]]) -> float:
    """The largest Monte Carlo SE of a truth over the item-level IPS standard error of its estimate."""
    ratios = [
        row["truth_mc_se"] / row["item_level"]["ips"]["standard_error"]
        for result in results
        for row in result["targets"]
        if row["item_level"]["ips"]["standard_error"] > 0
    ]
    return max(ratios, default=0.0)


def run(
    config: SimulationConfig,
    seeds: Sequence[int],
    logs: dict[str, Sequence[str]],
    draws: int,
    folder: Path,
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for seed in seeds:
        simulator = Simulator(config)
        prepared = folder / f"prepared-{seed}"
        simulator.prepare(seed, prepared)
        for logging, targets in logs.items():
            results.append(check_log(simulator, logging, targets, seed, prepared, folder, draws))
    by_log = {logging: coverage([r for r in results if r["logging"] == logging]) for logging in logs}
    return {
        "setting": config.to_json(),
        "seeds": list(seeds),
        "draws_per_visit_for_softmax_truth": draws,
        "targets": {logging: list(targets) for logging, targets in logs.items()},
        "coverage": {"all": coverage(results), **by_log},
        "coverage_per_seed": per_seed(results),
        "largest_truth_mc_se_over_ips_se": mc_ratio(results),
        "runs": results,
    }


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-2", help="e.g. 0-2 or 0,3")
    parser.add_argument("--horizon", type=int, default=3000)
    parser.add_argument("--model", default="mf-bpr")
    parser.add_argument("--temperature", type=float, default=0.3, help="the softmax logging policy's")
    parser.add_argument("--epsilon", type=float, default=0.2, help="the ε-greedy logging policy's")
    parser.add_argument("--draws", type=int, default=500, help="lists per visit for a softmax truth (Monte Carlo)")
    args = parser.parse_args()
    config = default_config(args.horizon, args.model, args.temperature, args.epsilon)
    logs = {"softmax": SOFTMAX_TARGETS, "epsilon": EPSILON_TARGETS}
    with tempfile.TemporaryDirectory(prefix="liverec-ope-sim-") as folder:
        out = run(config, parse_seeds(args.seeds), logs, args.draws, Path(folder))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
