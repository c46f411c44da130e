"""``liverec ope``: estimate what other exploration policies would have earned on the lists a data folder logged."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liverec.cli.common import load_settings
from liverec.errors import UsageError

if TYPE_CHECKING:
    from liverec.cli.common import Subparsers
    from liverec.ope import OPEReport


def add_parser(subparsers: Subparsers) -> None:
    ope = subparsers.add_parser(
        "ope",
        help="off-policy evaluation: what another policy would have earned on the logged lists",
        description="Read every served list (impression) of the data folder and the rewards joined to it, recompute "
        "what each --policy would have shown on the same candidates, and estimate its expected reward per list "
        "with IPS, self-normalised IPS, the direct method (the served model's scores calibrated to the reward) and "
        "doubly robust, at item level (independent-position IPS, marginal slot propensities) and at list level "
        "(standard slate IPS), each with a confidence interval: normal approximation at item level, empirical "
        "likelihood at list level (Cressie-Read, which widens where the slate weights miss the target's mass "
        "instead of collapsing). The support deficit is the target's mass on what the logging policy could never "
        "show: the estimates cannot see it.",
    )
    ope.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="folder holding the event log, state and model registry"
    )
    ope.add_argument("--config", metavar="FILE", help="settings TOML file (also LIVEREC_CONFIG)")
    ope.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="NAME[:SETTING=VALUE,...]",
        help="a policy to evaluate (repeatable): greedy, epsilon[:epsilon=0.1], "
        "softmax[:temperature=1.0,candidates=50]; settings default to the explore_* defaults",
    )
    ope.add_argument(
        "--confidence", type=float, default=0.95, help="coverage of the confidence intervals (default 0.95)"
    )
    ope.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ope.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from liverec.backends import open_backend
    from liverec.ope import evaluate, logged_lists, parse_policy

    targets = [parse_policy(text) for text in args.policy]
    if not 0 < args.confidence < 1:
        raise UsageError(f"--confidence: expected a number in (0, 1), got {args.confidence!r}")
    settings = load_settings(args)
    with open_backend(settings) as backend:
        backend.require_log("nothing to evaluate")
        with backend.open_log(readonly=True) as log:
            impressions = [impression for batch in log.iter_impressions() for impression in batch]
            rewards = log.get_rewards_many([impression.recommendation_id for impression in impressions])
        where = backend.describe()
    lists, skipped = logged_lists(impressions, rewards)
    if not lists:
        raise UsageError(f"--data-dir: no served lists (impressions) in {where}; serve recommendations first")
    reports = evaluate(lists, targets, confidence=args.confidence)
    out: dict[str, Any] = {
        "log": where,
        "impressions": len(impressions),
        "skipped": skipped,
        "logging_policies": _count(lists),
        "policies": [report.to_json() for report in reports],
    }
    print(json.dumps(out) if args.json else _table(out, reports))
    return 0


def _count(lists: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in lists:
        counts[item.policy] = counts.get(item.policy, 0) + 1
    return counts


def _table(out: dict[str, Any], reports: list[OPEReport]) -> str:
    head = (
        f"{out['impressions']} impressions in {out['log']} (logged by "
        + ", ".join(f"{name}: {n}" for name, n in out["logging_policies"].items())
        + f"); observed mean reward per list {reports[0].observed_reward:.4f}"
    )
    lines = [head]
    for report in reports:
        lines += ["", report.policy, f"  {'estimator':<10}{'item level [CI]':<32}list level [CI]"]
        for name in report.item:
            item, whole = report.item[name], report.list[name]
            item_text = f"{item.value:.4f} [{item.low:.4f}, {item.high:.4f}]"
            list_text = f"{whole.value:.4f} [{whole.low:.4f}, {whole.high:.4f}]"
            lines.append(f"  {name:<10}{item_text:<32}{list_text}")
        deficit, effective = report.support_deficit, report.effective_lists
        lines.append(
            f"  support deficit: item level {deficit['item_level']:.4f}, list level "
            f"{deficit['list_level']['low']:.4f}..{deficit['list_level']['high']:.4f}; effective lists: item level "
            f"{effective['item_level']:.0f}, list level {effective['list_level']:.0f} of {report.lists}"
        )
    return "\n".join(lines)
