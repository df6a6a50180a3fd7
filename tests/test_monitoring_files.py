"""supervisor/monitoring/: the Grafana dashboard and the alert rules query only metrics a
real server exports, and are well-formed.

Every PromQL expression (panel targets, template variables, alert rules) is
reduced to the metric names it selects (:func:`metric_names`). Those must be
in :data:`CONTRACT`, the names the metrics module promises (docs/observability.md),
or Prometheus' and prometheus-client's own; and, the check that matters, they
must be in a real ``/metrics`` scrape of ``python server.py`` after some
traffic, parsed with ``prometheus_client.parser``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pusher
import pytest
import tornado.websocket
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from conftest import ROOT, in_thread
from redis_server import free_port
from tornado_push.pubsub.signing import sign

MONITORING = ROOT / "supervisor" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
DATASOURCE = "${DS_PROMETHEUS}"

#: The metrics the server promises: name -> type (labels are the metrics module's business).
CONTRACT = {
    "tornado_push_connections": "gauge",
    "tornado_push_connections_opened_total": "counter",
    "tornado_push_connections_closed_total": "counter",
    "tornado_push_connections_refused_total": "counter",
    "tornado_push_subscriptions": "gauge",
    "tornado_push_channels": "gauge",
    "tornado_push_subscriptions_refused_total": "counter",
    "tornado_push_presence_members": "gauge",
    "tornado_push_signins_total": "counter",
    "tornado_push_publications_total": "counter",
    "tornado_push_deliveries_total": "counter",
    "tornado_push_frames_received_total": "counter",
    "tornado_push_received_bytes_total": "counter",
    "tornado_push_sent_bytes_total": "counter",
    "tornado_push_publish_latency_seconds": "histogram",
    "tornado_push_broker_lag_seconds": "histogram",
    "tornado_push_fanout_duration_seconds": "histogram",
    "tornado_push_http_requests_total": "counter",
    "tornado_push_http_request_duration_seconds": "histogram",
    "tornado_push_http_auth_failures_total": "counter",
    "tornado_push_webhook_requests_total": "counter",
    "tornado_push_webhook_retries_total": "counter",
    "tornado_push_webhook_events_dropped_total": "counter",
    "tornado_push_webhook_queue_depth": "gauge",
    "tornado_push_webhook_request_duration_seconds": "histogram",
    "tornado_push_broker_connected": "gauge",
    "tornado_push_broker_reconnects_total": "counter",
    "tornado_push_broker_command_duration_seconds": "histogram",
    "tornado_push_history_appends_total": "counter",
    "tornado_push_history_reads_total": "counter",
    "tornado_push_history_replayed_total": "counter",
    "tornado_push_history_resumes_total": "counter",
    "tornado_push_slow_consumer_disconnects_total": "counter",
    "tornado_push_rate_limited_total": "counter",
    "tornado_push_event_loop_lag_seconds": "histogram",
    "tornado_push_draining": "gauge",
    "tornado_push_build_info": "gauge",
}
#: Prometheus' own (per target, never in a scrape) and the default collectors' families.
PROMETHEUS_OWN = {"up"}
DEFAULT_COLLECTORS = re.compile(r"process_\w+|python_gc_\w+|python_info")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


# -- PromQL ------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers that are not a
    function or aggregation (followed by '('), keyword, label (in {}, by(), on()...),
    string, number or duration."""
    rest = _STRING.sub('""', expr)
    rest = _MATCHERS.sub(" ", rest)
    rest = _RANGE.sub(" ", rest)
    rest = _GROUPING.sub(" ", rest)
    names = set()
    for match in _IDENTIFIER.finditer(rest):
        if rest[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_metric_names_finds_the_selected_metrics_only():
    expr = ('histogram_quantile(0.99, sum by (le, app) (rate(a_seconds_bucket{app=~"x(y)", '
            'job="$job"}[$__rate_interval]))) / on(instance) group_left b_total '
            '> bool 1e3 and c offset 5m unless sum without (instance) (d{x="}"})')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}


# -- what the files query ------------------------------------------------------------------

def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"]
            for rule in group["rules"]]


def panels(within: list[dict]) -> Iterator[dict]:
    """Every panel, those inside collapsed rows too."""
    for panel in within:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every query the dashboard and the rules make."""
    found = [(f"panel {panel['title']!r}", target["expr"])
             for panel in panels(dashboard()["panels"]) for target in panel.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
        assert selector, variable["query"]
        found.append((f"variable {variable['name']}", selector.group(1)))
    found += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    return found


def queried_names() -> dict[str, str]:
    """Every metric name queried, with one place that queries it."""
    names: dict[str, str] = {}
    for where, expr in queries():
        for name in metric_names(expr):
            names.setdefault(name, where)
    return names


def promised(name: str) -> bool:
    if name in CONTRACT or name in PROMETHEUS_OWN or DEFAULT_COLLECTORS.fullmatch(name):
        return True
    return any(name.endswith(suffix) and CONTRACT.get(name[:-len(suffix)]) == "histogram"
               for suffix in HISTOGRAM_SERIES)


def test_every_metric_queried_is_one_the_server_promises():
    names = queried_names()
    assert len(names) > 40  # the extraction found the queries
    assert {name: where for name, where in names.items() if not promised(name)} == {}


@pytest.mark.timeout(120)
@pytest.mark.gen_test(timeout=90)
async def test_every_metric_queried_is_in_a_real_scrape_after_traffic(redis_server,
                                                                      server_processes):
    """A server on Redis, with a client subscribing, publishing a client event and
    answering a ping, SDK publishes, a refused API request and a webhook that fails;
    then its /metrics, parsed as Prometheus parses it, holds every series queried."""
    secret = "monitoring-secret"
    (server,) = await server_processes(
        1, PUSH_REDIS_URL=redis_server.url, PUSH_APP_SECRET=secret,
        PUSH_APP_HISTORY_CHANNELS="news", PUSH_WEBHOOK_BATCH_SECONDS="0.05",
        PUSH_APP_WEBHOOKS=f"http://127.0.0.1:{free_port()}/nobody-listens")
    socket = await tornado.websocket.websocket_connect(
        f"ws://127.0.0.1:{server.port}/app/app-key?protocol=7")
    try:
        async def event(name: str) -> dict:
            while True:
                frame = json.loads(await asyncio.wait_for(socket.read_message(), 10))
                if frame["event"] == name:
                    return frame

        socket_id = json.loads((await event("pusher:connection_established"))["data"])[
            "socket_id"]
        auth = f"app-key:{sign(secret, f'{socket_id}:private-chat')}"
        for channel, extra in (("news", {}), ("private-chat", {"auth": auth})):
            await socket.write_message(json.dumps(
                {"event": "pusher:subscribe", "data": {"channel": channel, **extra}}))
            await event("pusher_internal:subscription_succeeded")
        await socket.write_message(json.dumps(
            {"event": "client-typing", "channel": "private-chat", "data": {}}))
        await socket.write_message(json.dumps({"event": "pusher:ping", "data": {}}))
        await event("pusher:pong")
        sdk = pusher.Pusher(app_id="1", key="app-key", secret=secret, host="127.0.0.1",
                            port=server.port, ssl=False)
        for number in range(3):
            await in_thread(sdk.trigger, "news", "greet", {"n": number})
            await event("greet")
        await in_thread(sdk.trigger_batch, [{"channel": "news", "name": "batch", "data": "{}"}])
        await event("batch")
        wrong = pusher.Pusher(app_id="1", key="app-key", secret="wrong", host="127.0.0.1",
                              port=server.port, ssl=False)
        with pytest.raises(pusher.errors.PusherBadAuth):
            await in_thread(wrong.trigger, "news", "refused", {})
        await server.wait_for_log("webhook to", timeout=30)  # channel_occupied failed
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}/metrics",
                                                 raise_error=False)
    finally:
        socket.close()
    assert response.code == 200, (response.code, response.body[:300])

    exported = set()
    for family in text_string_to_metric_families(response.body.decode()):
        exported |= series_names(family) | {sample.name for sample in family.samples}
    missing = {name: where for name, where in queried_names().items()
               if name not in exported and name not in PROMETHEUS_OWN}
    assert missing == {}, f"queried but not exported: {missing}"


def series_names(family) -> set[str]:
    """The series a family exposes even before it has a sample (a labelled counter with
    no children yet still has its HELP and TYPE)."""
    name = family.name
    if family.type == "counter":
        return {f"{name}_total", f"{name}_created"}
    if family.type in ("histogram", "gaugehistogram"):
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if family.type == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


# -- the dashboard's structure -------------------------------------------------------------

def test_the_dashboard_imports_with_a_prometheus_input_and_its_variables():
    board = dashboard()
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    assert board["id"] is None and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["job", "instance", "app"]
    assert [variables[name]["multi"] for name in variables] == [False, True, True]
    for variable in variables.values():
        assert variable["type"] == "query" and variable["datasource"]["uid"] == DATASOURCE


def test_every_panel_queries_the_input_datasource_and_has_a_place_of_its_own():
    board = dashboard()
    every = list(panels(board["panels"]))
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    occupied: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in "hwxy"), panel["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        for cell in ((x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                     for y in range(grid["y"], grid["y"] + grid["h"])):
            assert cell not in occupied, (panel["title"], "overlaps", occupied[cell])
            occupied[cell] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
    rows = [panel["title"] for panel in every if panel["type"] == "row"]
    assert rows == ["Overview", "Connections", "Messages", "Latency", "HTTP API", "Webhooks",
                    "Redis", "Backpressure", "History", "Runtime"]


def test_panels_select_the_chosen_processes_and_percentiles_sum_buckets_by_le():
    for where, expr in queries():
        if not where.startswith("panel"):
            continue
        for selector in re.findall(r"\b(?:tornado_push_\w+|process_\w+|python_\w+|up)\{([^}]*)\}",
                                   expr):
            assert 'instance=~"$instance"' in selector, (where, expr)
        for quantile in re.findall(r"histogram_quantile\([^,]+,\s*(\w+ by \([^)]*\))", expr):
            assert re.search(r"\ble\b", quantile), (where, expr)


# -- the alert rules -----------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def test_every_alert_rule_is_complete():
    document = yaml.safe_load(ALERTS.read_text())
    assert [set(group) for group in document["groups"]] == [{"name", "rules"}]
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and len(names) >= 10
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"TornadoPush[A-Z][A-Za-z0-9]+", rule["alert"])
        assert _DURATION.fullmatch(rule["for"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]
        assert metric_names(rule["expr"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_the_docs_list_every_alert():
    docs = (ROOT / "docs" / "observability.md").read_text()
    listed = re.findall(r"^\| `(TornadoPush\w+)` \|", docs, flags=re.MULTILINE)
    assert listed == [rule["alert"] for rule in alert_rules()]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules_and_the_scrape_config(tmp_path: Path):
    rules = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                           text=True, timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
