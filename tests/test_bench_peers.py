"""The peers of bench/broadcast.py (bare Tornado, Node ws, Nchan) and its wrk driver work.

Each peer is started the way the bench starts it (bench/servers.py) and
spoken to through the bench's own load client (bench/client.py), with the
wire it speaks: every subscriber gets every message of a batch, and a probe
reads each message's send time, so the figures the bench prints count real
deliveries. Nothing here is timed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import broadcast  # noqa: E402
import client  # noqa: E402
import measuring  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
import wrk  # noqa: E402
from client import NCHAN, PUSHER, open_http, open_subscribers, stamped  # noqa: E402
from servers import Processes, free_port  # noqa: E402

WIRES = {"nchan": NCHAN}


async def deliver_batch(subscribe_port: int, publish_port: int, wire: client.Wire,
                        subscribers: int = 20, messages: int = 3) -> list[client.Receiver]:
    """Publish one batch of ``messages`` to ``subscribers`` (two of them probes); wait until
    each has as many bytes as ``messages`` frames of the first subscriber's frame size."""
    receivers, probes, _ = await open_subscribers(subscribe_port, subscribers, probes=2,
                                                  wire=wire, timeout=10)
    publisher = (await open_http(publish_port, 1))[0]
    first = [r.expect(1) for r in receivers]
    await client.send(publisher, wire.publish(publish_port, "bench", [stamped()]))
    await asyncio.wait_for(asyncio.gather(*first), 10)
    await asyncio.sleep(0.2)
    frame = receivers[0].received
    for probe in probes:
        probe.latencies.clear()
    done = [r.expect(frame * messages) for r in receivers]
    await client.send(publisher, wire.publish(publish_port, "bench", [stamped()] * messages))
    await asyncio.wait_for(asyncio.gather(*done), 10)
    client.close_all([*receivers, publisher])
    return receivers


@pytest.mark.parametrize("kind", ["ours", "baseline", "ws", "nchan"])
def test_every_server_of_the_bench_delivers_a_batch_to_each_subscriber(kind):
    with Processes() as processes:
        server = processes.start(kind, free_port(), cpu=None)
        receivers = client.run(deliver_batch(server.port, server.port, WIRES.get(kind, PUSHER)))
        probes = [r for r in receivers if isinstance(r, client.Probe)]
        assert len({r.received for r in receivers}) == 1  # the same bytes to every subscriber
        assert [len(p.latencies) for p in probes] == [3, 3]
        assert all(0 < ns < 10e9 for p in probes for ns in p.latencies)
        assert server.rss_kb() > 0 and server.cpu_seconds() >= 0


def test_nchan_serves_from_its_worker_and_reaches_subscribers_of_another_instance_through_redis():
    with tempfile.TemporaryDirectory() as directory, Processes() as processes:
        redis_port = free_port()
        processes.redis(redis_port, directory)
        url = f"redis://127.0.0.1:{redis_port}"
        subscribe = processes.start("nchan", free_port(), redis_url=url, cpu=None)
        publish = processes.start("nchan", free_port(), redis_url=url, cpu=None)
        assert subscribe.pid != subscribe.process.pid  # measured: the worker, not the master
        receivers = client.run(deliver_batch(subscribe.port, publish.port, NCHAN))
        assert {r.received for r in receivers} == {3 * 102}  # 2-byte header, 100-byte body


@pytest.mark.parametrize("kind", ["ours", "nchan"])
def test_wrk_sends_the_prepared_publish_again_and_again(kind):
    wire = WIRES.get(kind, PUSHER)

    async def drive(port: int) -> tuple[dict, client.Probe]:
        _, (probe,), _ = await open_subscribers(port, 1, probes=1, wire=wire, timeout=10)
        result = await wrk.run(port, wire.publish(port, "bench", [stamped()], batch=False),
                               connections=4, threads=1, seconds=1, cpu=None)
        await asyncio.sleep(0.5)
        probe.close()
        return result, probe

    with Processes() as processes:
        server = processes.start(kind, free_port(), cpu=None)
        result, probe = client.run(drive(server.port))
    assert result["failed"] == 0 and result["errors"] == 0, result
    assert result["rate"] > 10
    assert len(probe.latencies) >= 10  # each publish reached the subscriber


def test_wrk_script_escapes_the_request_and_refuses_pipelined_ones():
    request = client.Request(b'POST /pub/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n'
                             b'X-Note: say "hi"\r\n\r\na"\\\n1')
    script = wrk.lua_script(request)
    assert 'wrk.body = "a\\034\\092\\0101"' in script
    assert 'wrk.headers["X-Note"] = "say \\034hi\\034"' in script
    assert "Host" not in script and "Content-Length" not in script
    with pytest.raises(ValueError):
        wrk.lua_script(NCHAN.publish(1, "a", ["x", "y"]))


def test_a_missing_peer_is_skipped_with_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(servers, "NCHAN_MODULE", "/nonexistent/ngx_nchan_module.so")
    monkeypatch.setattr(servers, "PEERS", Path("/nonexistent"))
    assert broadcast.chosen_peers("baseline,ws,nchan") == ("baseline",)
    said = capsys.readouterr().out
    assert "peer ws SKIPPED" in said and "npm ci --prefix bench/peers" in said
    assert "peer nchan SKIPPED" in said and "apt-get install libnginx-mod-nchan" in said
    with pytest.raises(SystemExit, match="unknown redis"):
        broadcast.chosen_peers("redis")


def test_the_summary_judges_targets_against_the_peers_measured_in_the_same_run():
    rows = [report.row("HTTP publishes/s", {"ours": 20_000, "baseline": 4_000, "ws": 25_000},
                       [report.at_least("baseline", 4), report.at_least("ws", 1)]),
            report.row("p99 (ms)", {"ours": 12.0, "baseline": 90.0},
                       [report.at_most("ws", 1), report.at_most_value(15, "ms")])]
    assert rows[0].verdicts() == [">= 4x baseline: met", ">= 1x ws: NOT met"]
    assert rows[1].verdicts() == ["<= 1x ws: not measured", "<= 15 ms: met"]
    header, http, p99 = report.summary(rows, ("ours", "baseline", "ws"))
    assert header.split() == ["ours", "baseline", "ws", "ours/baseline", "ours/ws", "targets"]
    assert http.split()[2:7] == ["20,000", "4,000", "25,000", "5.00x", "0.80x"]
    assert p99.split()[2:7] == ["12.00", "90.00", "-", "0.13x", "-"]


def test_a_failed_measurement_is_reported_and_left_out_while_the_run_goes_on(capsys):
    def measure_one(kind: str) -> dict:
        if kind == "ws":
            raise RuntimeError("ws server died during the measurement")
        return {"rate": {"ours": 10.0, "nchan": 4.0}[kind], "complete": True}

    runs = measuring.run_interleaved(("ours", "ws", "nchan"), 2, measure_one,
                                     lambda kind, result: f"{kind} {result['rate']}")
    assert runs.medians("rate") == {"ours": 10.0, "nchan": 4.0}
    assert runs.failures == 2 and not runs.complete
    assert capsys.readouterr().out.count("ws       FAILED: RuntimeError: ws server died") == 2
