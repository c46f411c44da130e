"""The Grafana dashboard and the alert rules in docs/grafana read metrics that a real server exports.

A metric renamed in the code breaks these tests: every metric name in a PromQL expression of the dashboard or
the rules must be a sample of `GET /metrics` from a real `liverec serve` that has answered requests, ingested
events and run its updater through a gate decision. ``promtool`` (Debian's ``prometheus`` package, installed by
``.ci/run``) checks the rules' syntax and runs their unit tests; it is required, not skipped when missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Prepared, Server, cluster_items

GRAFANA = Path(__file__).resolve().parents[2] / "docs" / "grafana"
DASHBOARD = GRAFANA / "liverec.json"
ALERTS = GRAFANA / "alerts.yaml"
ALERT_TESTS = GRAFANA / "alerts.test.yaml"

#: The updater learns after 100 events (or 2 s) and the gate decides on 30: a decision within seconds.
UPDATER_ON = {
    "LIVEREC_UPDATER": "true",
    "LIVEREC_UPDATER_EVERY_EVENTS": "100",
    "LIVEREC_UPDATER_EVERY_SECONDS": "2",
    "LIVEREC_GATE_EVENTS": "30",
}

# words of PromQL that look like metric names: functions are told apart by the "(" after them
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")  # not the unit of a duration such as 5m


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: string literals, label matchers, ``by (...)`` lists, range
    selectors and Grafana's ``$variables`` taken out, then every identifier that is not a function call or a
    keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if match.group() not in _KEYWORDS and not rest.startswith("("):
            names.add(match.group())
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def exported_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` text as sample name -> [(labels, value)] (``_total``, ``_bucket`` and the like included)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(liverec_http_request_duration_seconds_bucket{route=~"a|b",'
        ' status!="500"}[$__rate_interval]))) / on (route) group_left max without (instance) (liverec_users offset'
        " 5m) > 0.05 and time() - max(liverec_updater_last_version_timestamp_seconds) > bool 600"
    )
    assert metric_names(expr) == {
        "liverec_http_request_duration_seconds_bucket",
        "liverec_users",
        "liverec_updater_last_version_timestamp_seconds",
    }


def test_dashboard_imports_with_a_prometheus_datasource_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] == "liverec"
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    titles = {panel["title"] for panel in panels}
    for wanted in (
        "Recommendation latency p50 / p99",
        "5xx share of requests",
        "Updater lag",
        "Gate decisions per hour",
    ):
        assert wanted in titles


def test_alert_rules_have_threshold_duration_summary_and_runbook() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "LiveRecUpdaterBehind",
        "LiveRecUpdaterStalled",
        "LiveRecRecommendationLatencyHigh",
        "LiveRecHigh5xxRate",
        "LiveRecGateRejectingCandidates",
    }
    for rule in rules:
        assert re.search(r">=?\s*\d", rule["expr"]), f"{rule['alert']}: no threshold"
        assert rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]


def test_promtool_checks_the_rules_and_each_alert_fires_on_its_synthetic_series(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: apt-get install -y prometheus (.ci/run does)"
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # the dashboard's queries parse as PromQL too (Grafana's $__rate_interval stands for a range)
    records = [
        {"record": f"liverec:dashboard:{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, expr in enumerate(dashboard_exprs())
    ]
    rules_file = tmp_path / "dashboard_rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    parsed = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr


@pytest.fixture
def busy_server(data_dir: Path, prepared: Prepared) -> Iterator[Server]:
    """A server with its updater on that has answered requests (a fallback among them), ingested events (a
    duplicate, a click joined to its list, one naming an unknown list) and seen its gate decide once."""
    server = Server(data_dir, env=UPDATER_ON)
    try:
        client = server.client
        anchors = cluster_items(prepared.truth, prepared.dataset, 0, 20)
        answer = client.get("/v1/users/nobody-yet/recommendations", params={"k": 5}).json()  # a fallback
        client.post("/v1/recommendations", json={"items": anchors[:2], "k": 5})
        client.get(f"/v1/items/{anchors[0]}/similar", params={"k": 5})
        clicked = answer["items"][0]["item_id"]
        rewards = [
            {
                "user_id": "nobody-yet",
                "item_id": clicked,
                "type": "click",
                "recommendation_id": answer["recommendation_id"],
            },
            {"user_id": "nobody-yet", "item_id": clicked, "type": "click", "recommendation_id": "no-such-list"},
        ]
        assert client.post("/v1/events", json=rewards).status_code == 200
        for n in range(40):  # 400 events from users who keep to cluster 0
            batch = [
                {
                    "user_id": f"fan-{n}-{m}",
                    "item_id": anchors[(n + m + j) % 20],
                    "type": "view",
                    "event_id": f"{n}-{m}-{j}",
                }
                for m in range(2)
                for j in range(5)
            ]
            assert client.post("/v1/events", json=batch).status_code == 200
        duplicate = {"user_id": "fan-0-0", "item_id": anchors[0], "type": "view", "event_id": "0-0-0"}
        assert client.post("/v1/events", json=duplicate).json()["duplicates"] == 1
        assert client.post("/v1/events", json=[{"user_id": "x", "item_id": "y", "type": ""}]).status_code == 422
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            decided = exported_samples(client.get("/metrics").text).get("liverec_gate_decisions_total", [])
            if sum(value for _, value in decided) >= 1:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no gate decision within 120 s:\n{server.output()[-3000:]}")
        yield server
    finally:
        server.stop()


@pytest.mark.slow  # a server with its updater in subprocesses
def test_every_metric_in_the_dashboard_and_the_alerts_is_exported(busy_server: Server) -> None:
    exported = set(exported_samples(busy_server.client.get("/metrics").text))
    used = {
        name for expr in dashboard_exprs() + [rule["expr"] for rule in alert_rules()] for name in metric_names(expr)
    }
    assert "liverec_updater_lag_events" in used and "liverec_gate_decisions_total" in used
    missing = sorted(used - exported)
    assert not missing, f"metrics used in docs/grafana but not exported by GET /metrics: {missing}"


def stable_metrics(client: httpx.Client) -> tuple[dict[str, list[tuple[dict[str, str], float]]], dict[str, Any]]:
    """``/metrics`` and ``GET /v1/models`` read while no version was registered or decided in between."""
    watched = ("liverec_model_versions", "liverec_gate_decisions_total", "liverec_updater_offset")
    for _ in range(100):
        before = exported_samples(client.get("/metrics").text)
        models = client.get("/v1/models").json()
        after = exported_samples(client.get("/metrics").text)
        if all(before[name] == after[name] for name in watched):
            return after, models
        time.sleep(0.2)
    raise AssertionError("the registry kept changing under the reads for 20 s")


@pytest.mark.slow  # a server with its updater in subprocesses
def test_updater_metrics_say_what_the_registry_holds(busy_server: Server) -> None:
    metrics, models = stable_metrics(busy_server.client)
    manifests = models["versions"]
    judged = [m["gate"] for m in manifests if m.get("gate")]
    decisions = {labels["decision"]: value for labels, value in metrics["liverec_gate_decisions_total"]}
    assert decisions == {
        "promoted": sum(1 for gate in judged if gate["promoted"]),
        "rejected": sum(1 for gate in judged if not gate["promoted"]),
    }
    assert sum(decisions.values()) >= 1
    by_status = {labels["status"]: value for labels, value in metrics["liverec_model_versions"]}
    assert by_status == {s: sum(1 for m in manifests if m["status"] == s) for s in by_status}
    assert sum(by_status.values()) == len(manifests) >= 2
    learned = max(m["training"]["last_offset"] for m in manifests)
    assert metrics["liverec_updater_offset"] == [({}, learned)]
    [(_, lag)] = metrics["liverec_updater_lag_events"]
    [(_, applied)] = metrics["liverec_log_offset"]  # the embedded state applies every commit: the log's last offset
    assert lag == applied - learned >= 0
    [(_, newest)] = metrics["liverec_updater_last_version_timestamp_seconds"]
    assert newest == max(m["created_at"] for m in manifests)
    assert metrics["process_resident_memory_bytes"][0][1] > 0
