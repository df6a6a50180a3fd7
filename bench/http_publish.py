"""HTTP publish rate (issue 16): signed ``POST /apps/1/events`` driven by wrk, ours against
the bare Tornado baseline in the same run.

    python bench/http_publish.py [--runs 3] [--seconds 5] [--connections 64]
                                 [--also PATH ...] [--profile FILE]

Each measurement starts a fresh server pinned to CPU 0 (ours: ``python
server.py`` with the in-process broker and bench/servers.py's environment;
the baseline: bench/baseline_server.py), connects one WebSocket subscriber to
the channel, then runs ``wrk`` (one thread, ``--connections`` keep-alive
connections, pinned to CPU 1) for ``--seconds`` with one request: one event
of 100 bytes to that channel, signed as the official SDKs sign it (HMAC-SHA256
over the query with the body's MD5). The signature is made once per run: its
timestamp stays inside the server's 600 s window for a run of a few minutes.
Ours verifies every signature; the baseline checks none.

``--also PATH`` measures the server of another checkout too (e.g. the commit
before a change, from ``git worktree add``), in the same runs, as
``ours@PATH``. ``--profile FILE`` runs one extra measurement of ours under
``py-spy record`` (``pip install -r bench/requirements.txt``) and writes its flame graph
(SVG) to FILE, or its collapsed stacks when FILE ends in ``.txt``.

Prints each run as it comes, then the medians and the ratio to the baseline, of
publishes/s and of the server's CPU time per publish (user + system, from
/proc), which other load on the machine disturbs less than the rate.
A run is refused (and said so) if wrk saw a non-2xx answer or the subscriber
received nothing. Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import client
from client import open_subscribers, publish_request, stamped
from servers import ROOT, Processes, Server, free_port, pin

CHANNEL = "bench"
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors:.*")


def wrk_script(raw: bytes) -> str:
    """A wrk Lua script sending the method, path, headers and body of ``raw`` on every request."""
    head, _, body = raw.decode().partition("\r\n\r\n")
    request_line, *headers = head.split("\r\n")
    method, path, _ = request_line.split(" ")
    lines = [f'wrk.method = "{method}"', f'wrk.path = "{path}"',
             f"wrk.body = [==[{body}]==]"]
    for header in headers:
        name, _, value = header.partition(": ")
        if name.lower() not in ("host", "content-length"):  # wrk sets both itself
            lines.append(f'wrk.headers["{name}"] = "{value}"')
    return "\n".join(lines) + "\n"


async def run_wrk(port: int, script: str, connections: int, seconds: float) -> dict[str, float]:
    """wrk on CPU 1 against ``port``; its rate, non-2xx count and raw output."""
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", script,
        f"http://127.0.0.1:{port}/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: pin(0, 1))
    output, _ = await process.communicate()
    text = output.decode()
    rate = _RATE.search(text)
    if process.returncode != 0 or rate is None:
        raise RuntimeError(f"wrk failed:\n{text}")
    non_2xx = _NON_2XX.search(text)
    errors = _SOCKET_ERRORS.search(text)
    return {"rate": float(rate[1]), "non_2xx": int(non_2xx[1]) if non_2xx else 0,
            "errors": errors[0] if errors else ""}


async def publish_load(server: Server, script_dir: str, connections: int, seconds: float,
                       warm_up: float = 1.0) -> dict[str, float]:
    """One subscriber on the channel, a warm-up, then the measured wrk run."""
    (receiver,), _, _ = await open_subscribers(server.port, 1, channel=CHANNEL)
    raw = publish_request(server.port, CHANNEL, [stamped()], batch=False)
    script = os.path.join(script_dir, f"events-{server.port}.lua")
    with open(script, "w") as file:
        file.write(wrk_script(raw))
    await run_wrk(server.port, script, connections, warm_up)
    before, cpu = receiver.received, server.cpu_seconds()
    result = await run_wrk(server.port, script, connections, seconds)
    result["received"] = receiver.received - before
    # CPU per publish: what a loaded machine disturbs least (it steals time, not work).
    result["cpu_us"] = 1e6 * (server.cpu_seconds() - cpu) / (result["rate"] * seconds)
    receiver.close()
    return result


def _py_spy() -> str:
    """py-spy, from PATH or beside this Python (a venv not activated)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or str(beside)


def measure(kind: str, root: Path, args: argparse.Namespace, script_dir: str,
            profile: str | None = None) -> dict[str, float]:
    with Processes() as processes:
        port = free_port()
        server = (processes.baseline(port, cpu=0) if kind == "baseline"
                  else processes.ours(port, cpu=0, root=root))
        spy = None
        if profile:
            form = "raw" if profile.endswith(".txt") else "flamegraph"
            spy = subprocess.Popen([_py_spy(), "record", "-p", str(server.pid), "-o", profile,
                                    "-f", form, "-r", "200", "--nonblocking"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = client.run(publish_load(server, script_dir, args.connections, args.seconds))
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
                spy.wait(30)
        if not server.alive():
            raise RuntimeError(f"{kind} server died during the measurement")
    if result["non_2xx"] or not result["received"]:
        raise RuntimeError(f"{kind}: {result['non_2xx']} non-2xx answers, "
                           f"{result['received']} bytes delivered: the run does not count")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--also", action="append", default=[], type=Path,
                        help="another checkout whose server.py is measured too")
    parser.add_argument("--profile", help="write a py-spy flame graph of ours under load here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    pin(0, 1)  # the subscriber, in this process, shares CPU 1 with wrk
    kinds = {"ours": ROOT, **{f"ours@{path}": path.resolve() for path in args.also},
             "baseline": ROOT}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    costs: dict[str, list[float]] = {kind: [] for kind in kinds}
    print(f"HTTP publishes: wrk -t1 -c{args.connections} -d{args.seconds:g}s, signed POST "
          f"/apps/1/events (one 100-byte event, one subscriber), server on CPU 0, wrk on CPU 1, "
          f"{args.runs} runs", flush=True)
    with tempfile.TemporaryDirectory() as script_dir:
        for run in range(args.runs):
            for kind, root in kinds.items():
                result = measure(kind, root, args, script_dir)
                rates[kind].append(result["rate"])
                costs[kind].append(result["cpu_us"])
                print(f"  run {run + 1}  {kind:<10} {result['rate']:>9,.0f} publishes/s  "
                      f"{result['cpu_us']:6.1f} us server CPU each  "
                      f"({result['received']:,} bytes delivered) {result['errors']}", flush=True)
        if args.profile:
            measure("ours", ROOT, args, script_dir, profile=args.profile)
            print(f"  py-spy profile of ours: {args.profile}")
    base = statistics.median(rates["baseline"])
    base_cost = statistics.median(costs["baseline"])
    print(f"\n{'server':<12} {'median/s':>10} {'x baseline':>11} {'CPU us/publish':>15} "
          f"{'baseline/ours':>14}   runs (publishes/s)")
    for kind, values in rates.items():
        median, cost = statistics.median(values), statistics.median(costs[kind])
        print(f"{kind:<12} {median:>10,.0f} {median / base:>10.2f}x {cost:>15.1f} "
              f"{base_cost / cost:>13.2f}x   " + " ".join(f"{value:,.0f}" for value in values))


if __name__ == "__main__":
    main()
