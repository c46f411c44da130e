"""Runs of several policies over several seeds, summarised as mean ± standard error over the seeds, and drawn.

:func:`simulate` runs every policy on every seed (each seed's runs start from one prepared data folder: the same
past, catalogue and first model) and :func:`summarise` reduces the runs to the report ``liverec simulate
--json`` prints: per policy the cumulative reward (clicks), its gain over greedy (paired by seed), the regret
against the oracle, CTR per window, and how soon new items get their first click; :func:`plot_report` draws
the cumulative reward and CTR per window of every policy.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverec.simulation.simulator import SimulationConfig, SimulationRun, Simulator

__all__ = ["GOAL_GAIN_PCT", "GOAL_SOONER", "format_report", "plot_report", "simulate", "summarise"]

#: Issue 19's goal: an exploring policy earns this many percent more than greedy ...
GOAL_GAIN_PCT = 5.0
#: ... and finds new items this many times sooner.
GOAL_SOONER = 2.0
#: Points of the cumulative-reward curve kept in the report.
CURVE_POINTS = 100


def simulate(
    config: SimulationConfig,
    policies: Sequence[str],
    seeds: Sequence[int],
    *,
    data_dir: Path | None = None,
    on_run: Callable[[SimulationRun], None] | None = None,
) -> dict[str, Any]:
    """Run every policy on every seed and summarise (:func:`summarise`).

    ``data_dir``: keep each run's data folder (log with impressions and rewards, models) as
    ``data_dir/<policy>-seed<seed>``; default temporary folders. ``on_run``: called after each run.
    """
    simulator = Simulator(config)
    runs: list[SimulationRun] = []
    with tempfile.TemporaryDirectory(prefix="liverec-simulate-") as scratch:
        for seed in seeds:
            prepared = Path(scratch) / f"prepared-{seed}"
            simulator.prepare(seed, prepared)
            for policy in policies:
                folder = None if data_dir is None else Path(data_dir) / f"{policy}-seed{seed}"
                run = simulator.run(policy, seed, folder, prepared=prepared)
                runs.append(run)
                if on_run is not None:
                    on_run(run)
    return summarise(config, runs)


def _stats(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean ± standard error over seeds (None where a value is not finite), and the per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    finite = bool(np.all(np.isfinite(array)))
    mean = float(array.mean()) if finite and len(array) else None
    se = float(array.std(ddof=1) / math.sqrt(len(array))) if finite and len(array) > 1 else (0.0 if finite else None)
    return {"mean": mean, "se": se, "per_seed": [_number(v) for v in array.tolist()]}


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _median_steps(run: SimulationRun) -> float:
    steps = run.steps_to_first_click()
    return float(np.median(steps)) if len(steps) else math.nan


def summarise(config: SimulationConfig, runs: Sequence[SimulationRun]) -> dict[str, Any]:
    """The report of ``runs`` (every policy on the same seeds); see the module docstring."""
    policies = list(dict.fromkeys(run.policy for run in runs))
    seeds = list(dict.fromkeys(run.seed for run in runs))
    by = {(run.policy, run.seed): run for run in runs}
    missing = [(p, s) for p in policies for s in seeds if (p, s) not in by]
    if missing:
        raise ValueError(f"runs: every policy needs a run on every seed; missing {missing[0]}")
    greedy = {seed: by["greedy", seed] for seed in seeds} if "greedy" in policies else None
    out: dict[str, Any] = {}
    for policy in policies:
        mine = [by[policy, seed] for seed in seeds]
        reward = np.array([run.clicks.sum() for run in mine], dtype=np.float64)
        expected = np.array([run.expected.sum() for run in mine])
        regret = np.array([(run.oracle - run.expected).sum() for run in mine])
        ctr = np.array([run.window_ctr(config.windows) for run in mine])  # [seeds, windows]
        curve_at = np.unique(np.linspace(0, config.horizon, CURVE_POINTS + 1).round().astype(np.int64)[1:])
        curves = np.array([np.cumsum(run.clicks)[curve_at - 1] for run in mine])  # [seeds, points]
        restricted = np.array([run.restricted_steps_to_first_click().mean() for run in mine])
        entry: dict[str, Any] = {
            "cumulative_reward": _stats(reward),
            "expected_reward": _stats(expected),
            "regret": _stats(regret),
            "oracle_reward": _stats([run.oracle.sum() for run in mine]),
            "reward_per_list": _stats(reward / config.horizon),
            "ctr_per_window": {
                "mean": ctr.mean(axis=0).tolist(),
                "se": (ctr.std(axis=0, ddof=1) / math.sqrt(len(seeds))).tolist() if len(seeds) > 1 else None,
            },
            "cumulative_curve": {
                "visits": curve_at.tolist(),
                "mean": curves.mean(axis=0).tolist(),
                "se": (curves.std(axis=0, ddof=1) / math.sqrt(len(seeds))).tolist() if len(seeds) > 1 else None,
            },
            "new_items": {
                "released": _stats([len(run.new_items) for run in mine]),
                "median_visits_to_first_click": _stats([_median_steps(run) for run in mine]),
                "restricted_mean_visits_to_first_click": _stats(restricted),
                "never_clicked_share": _stats([float(np.mean(run.first_click_at < 0)) for run in mine]),
                "never_shown_share": _stats([float(np.mean(run.first_shown_at < 0)) for run in mine]),
            },
            "model_versions_promoted": _stats([run.versions for run in mine]),
            "seconds": _stats([run.seconds for run in mine]),
        }
        if greedy is not None:
            base = [greedy[seed] for seed in seeds]
            entry["vs_greedy_pct"] = _stats(100.0 * (reward / [run.clicks.sum() for run in base] - 1.0))
            entry["vs_greedy_expected_pct"] = _stats(100.0 * (expected / [run.expected.sum() for run in base] - 1.0))
            base_restricted = np.array([run.restricted_steps_to_first_click().mean() for run in base])
            entry["new_items"]["sooner_than_greedy"] = _stats(base_restricted / restricted)
        out[policy] = entry
    return {
        "setting": config.to_json(),
        "seeds": seeds,
        "policies": out,
        "goal": _goal(out),
        "definitions": {
            "cumulative_reward": "clicks on the served lists over the horizon (visits)",
            "expected_reward": "the served lists' expected clicks under the click model (less noisy)",
            "regret": "sum over visits of the oracle list's expected clicks minus the served list's",
            "ctr_per_window": "clicks per shown item in equal windows of the horizon",
            "median_visits_to_first_click": "per seed, the median over new items of visits from release to the "
            "first click on a served list (null: more than half never clicked)",
            "restricted_mean_visits_to_first_click": "the same, a mean with never-clicked items counted as the "
            "visits left after their release",
            "sooner_than_greedy": "greedy's restricted mean over this policy's, per seed",
            "vs_greedy_pct": "per seed, 100 * (clicks / greedy's clicks - 1)",
        },
    }


def _goal(policies: dict[str, Any]) -> dict[str, Any]:
    """Issue 19's goal, per exploring policy: ≥ 5 % more reward than greedy and new items ≥ 2× sooner (means)."""
    verdicts: dict[str, Any] = {}
    for policy, entry in policies.items():
        if policy == "greedy" or "vs_greedy_pct" not in entry:
            continue
        gain = entry["vs_greedy_pct"]["mean"]
        sooner = entry["new_items"]["sooner_than_greedy"]["mean"]
        verdicts[policy] = {
            "gain_pct": gain,
            "sooner": sooner,
            "met": gain is not None and sooner is not None and gain >= GOAL_GAIN_PCT and sooner >= GOAL_SOONER,
        }
    return {
        "needed": {"gain_pct": GOAL_GAIN_PCT, "sooner": GOAL_SOONER},
        "policies": verdicts,
        "met": any(v["met"] for v in verdicts.values()),
    }


def _pm(stats: dict[str, Any], digits: int = 1) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.{digits}f} ± {(stats['se'] or 0.0):.{digits}f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as a text table (what ``liverec simulate`` prints without ``--json``)."""
    lines = [
        f"seeds {report['seeds']}, horizon {report['setting']['horizon']} visits, k {report['setting']['k']}, "
        f"model {report['setting']['model']}",
        f"{'policy':<9} {'clicks':>16} {'vs greedy %':>14} {'regret':>16} {'median to 1st click':>20} "
        f"{'never clicked':>14} {'sooner':>12}",
    ]
    for policy, entry in report["policies"].items():
        new = entry["new_items"]
        gain = entry.get("vs_greedy_pct")
        sooner = new.get("sooner_than_greedy")
        lines.append(
            f"{policy:<9} {_pm(entry['cumulative_reward']):>16} {(_pm(gain) if gain else '-'):>14} "
            f"{_pm(entry['regret']):>16} {_pm(new['median_visits_to_first_click'], 0):>20} "
            f"{_pm(new['never_clicked_share'], 2):>14} {(_pm(sooner, 2) if sooner else '-'):>12}"
        )
    goal = report["goal"]
    lines.append(
        f"goal (+{goal['needed']['gain_pct']:g} % reward and {goal['needed']['sooner']:g}x sooner): "
        + ("met" if goal["met"] else "not met")
    )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Cumulative reward and CTR per window of every policy (mean ± standard error over seeds) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    setting = report["setting"]
    for policy, entry in report["policies"].items():
        curve = entry["cumulative_curve"]
        visits, mean = np.array(curve["visits"]), np.array(curve["mean"])
        (line,) = left.plot(visits, mean, label=policy)
        if curve["se"] is not None:
            se = np.array(curve["se"])
            left.fill_between(visits, mean - se, mean + se, color=line.get_color(), alpha=0.2)
        ctr = entry["ctr_per_window"]
        windows = np.arange(1, len(ctr["mean"]) + 1)
        right.errorbar(windows, ctr["mean"], yerr=ctr["se"], label=policy, color=line.get_color(), capsize=3)
    left.set_xlabel("visits (served lists)")
    left.set_ylabel("cumulative clicks")
    left.set_title("cumulative reward")
    right.set_xlabel(f"window ({setting['horizon'] // setting['windows']} visits each)")
    right.set_ylabel("clicks per shown item")
    right.set_title("CTR per window")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(
        f"liverec simulate: {setting['model']}, {len(report['seeds'])} seeds (mean ± SE), "
        f"{setting['n_items']} items, {setting['new_item_fraction']:.0%} released live"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
