"""The deploy kit as a user runs it: supervisor/start.sh, Debian's nginx, pip's supervisor.

Everything is real and on loopback: ``supervisor/start.sh`` renders the
configurations into a run directory under ``tmp_path`` and starts supervisord
(two ``server.py`` processes) and nginx (ws on one port, wss on another with
a certificate this module makes), against a test redis-server. Clients are
real pusher-js through nginx, publishes go through nginx with the official
SDK, a rolling restart is ``supervisorctl restart push:push-K``, and
``supervisor/stop.sh`` stops it all at teardown (then, as a fallback, the
PIDs from the pid files are killed).

pusher-js's HTTP fallback (Node and Chromium) and SSE go through the same
nginx: a fallback session's requests must all reach its process (the sticky
hash on the session path), and the TLS server speaks HTTP/2 to browsers.

Which process a client is on is read from its socket id, ``{node}.{n}``,
against each process's ``/health`` (``node``).

Absence (no ``member_removed``) is proven with a sentinel: a later event on
the same channel. Redis gives every process one order per channel, so a
leave announced before the sentinel would arrive before it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pusher
import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket
from pusher.requests import RequestsBackend

from app_server import auth_routes
from conftest import MAIN, ROOT, in_thread, until
from pusherjs import JSClient, PusherJS
from redis_server import bindable, free_port
from sse_client import SSEClient
from browser import Browser
from test_fallback_browser import page_origin, seen  # noqa: F401 (a fixture)
from conftest import subscribed
from test_pusherjs_client_events import error_codes

NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
START = ROOT / "supervisor" / "start.sh"
STOP = ROOT / "supervisor" / "stop.sh"
RELOAD = ROOT / "supervisor" / "reload.sh"
#: Seconds a closed client's presence is kept while its process drains (the default).
GRACE = 5.0

#: For the tests that run nginx; scripts/test installs it, so in CI they run.
needs_nginx = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK),
    reason=f"nginx is not installed at {NGINX} (scripts/test installs it: apt-get install nginx)")


# -- a certificate authority and a server certificate for 127.0.0.1 -------------------

class Certificates:
    """A test CA (``ca``) and a certificate it signed for 127.0.0.1 (``cert``, ``key``)."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                     not_valid_after=now + datetime.timedelta(days=1))

        def name(common_name: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder(subject_name=name("push deploy test CA"),
                                      issuer_name=name("push deploy test CA"),
                                      public_key=ca_key.public_key(),
                                      serial_number=x509.random_serial_number(), **valid)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder(subject_name=name("127.0.0.1"),
                                        issuer_name=ca.subject, public_key=key.public_key(),
                                        serial_number=x509.random_serial_number(), **valid)
                .add_extension(x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the key identifiers
                # must be there, as in every certificate a real CA issues.
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.ca = directory / "ca.pem"
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.ca.write_bytes(ca.public_bytes(pem))
        self.cert.write_bytes(cert.public_bytes(pem))
        self.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


# -- the deployment -------------------------------------------------------------------

def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports nobody listens on."""
    while True:
        first = free_port()
        if first + count - 1 > 65535:
            continue
        if all(bindable(port) for port in range(first + 1, first + count)):
            return first


class Deployment:
    """``supervisor/start.sh`` into ``run_dir``; ``stop()`` with ``supervisor/stop.sh``."""

    def __init__(self, run_dir: Path, redis_url: str, processes: int,
                 certificates: Certificates | None) -> None:
        self.run_dir = run_dir
        self.processes = processes
        self.port = free_port()
        self.tls_port = free_port() if certificates else None
        self.first_process_port = consecutive_free_ports(processes)
        self.certificates = certificates
        # The environment of a user with only PUSH_* of their own: none of this
        # process's, a Redis prefix of its own (the test Redis is shared).
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith("PUSH_")}
        self.env.update(PYTHON=sys.executable, PUSH_REDIS_URL=redis_url,
                        PUSH_REDIS_PREFIX=f"deploy-{uuid.uuid4().hex[:10]}",
                        PUSH_LOG_LEVEL="INFO", PUSH_DRAIN_GRACE=f"{GRACE:g}")
        self.pids: set[int] = set()  # everything start.sh started, for the fallback

    @property
    def conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    def process_port(self, number: int) -> int:
        return self.first_process_port + number

    def start(self, **env: str) -> subprocess.CompletedProcess:
        command = [str(START), "--processes", str(self.processes), "--port", str(self.port),
                   "--first-process-port", str(self.first_process_port),
                   "--run-dir", str(self.run_dir)]
        if self.certificates:
            command += ["--tls-port", str(self.tls_port), "--cert", str(self.certificates.cert),
                        "--key", str(self.certificates.key)]
        started = subprocess.run(command, env={**self.env, **env}, capture_output=True,
                                 text=True, timeout=120, stdin=subprocess.DEVNULL)
        self.remember_pids()
        assert started.returncode == 0, (
            f"start.sh failed ({started.returncode}):\n{started.stdout}\n{started.stderr}")
        return started

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``supervisorctl -c <run dir>/supervisord.conf ARGS`` from pip's supervisor."""
        done = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                               str(self.conf), *args], capture_output=True, text=True,
                              timeout=120, cwd=self.run_dir, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, f"supervisorctl {args}: {done.stdout}{done.stderr}"
        return done

    def pid_of(self, number: int) -> int:
        return int(self.ctl("pid", f"push:push-{number}").stdout)

    def remember_pids(self) -> None:
        for name in ("nginx.pid", "supervisord.pid"):
            path = self.run_dir / name
            if path.exists() and path.read_text().strip().isdigit():
                self.pids.add(int(path.read_text()))
        if (self.run_dir / "supervisor.sock").exists():
            answer = self.ctl("pid", "all", check=False).stdout.split()
            self.pids.update(int(pid) for pid in answer if pid.isdigit() and pid != "0")

    def stop(self) -> subprocess.CompletedProcess:
        self.remember_pids()
        return subprocess.run([str(STOP), "--run-dir", str(self.run_dir)], env=self.env,
                              capture_output=True, text=True, timeout=90,
                              stdin=subprocess.DEVNULL)

    def kill_leftovers(self) -> list[int]:
        """SIGKILL whatever start.sh started that is still alive (by PID); which those were."""
        left = [pid for pid in sorted(self.pids) if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return left

    def logs(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.run_dir.glob("logs/*.log")) + [self.run_dir / "supervisord.log"]:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}:\n" + "\n".join(tail))
        return "\n".join(parts)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def deploy(tmp_path: Path, redis_server):
    """``await deploy(tls=True, **env)``: a started deployment, stopped at teardown."""
    deployments: list[Deployment] = []

    async def start(*, processes: int = 2, tls: Certificates | None = None,
                    **env: str) -> Deployment:
        deployment = Deployment(tmp_path / f"run{len(deployments)}", redis_server.url,
                                processes, tls)
        deployments.append(deployment)
        await in_thread(deployment.start, **env)
        return deployment

    yield start
    problems = []
    for deployment in deployments:
        stopped = deployment.stop()
        left = deployment.kill_leftovers()
        if stopped.returncode != 0 or left:
            problems.append(f"stop.sh exited {stopped.returncode}, left running: {left}\n"
                            f"{stopped.stdout}{stopped.stderr}")
        print(deployment.logs())  # pytest shows it for a failed test
    assert not problems, "\n".join(problems)


@pytest.fixture
def app() -> tornado.web.Application:
    """Overrides conftest's: only the auth endpoints (on ``server_port``), no hub."""
    return tornado.web.Application(auth_routes([MAIN]))


@pytest.fixture
def js(io_loop, certificates: Certificates) -> PusherJS:
    """pusher-js in Node, trusting the test CA for wss://."""
    driver = io_loop.run_sync(lambda: PusherJS.start(
        env={"NODE_EXTRA_CA_CERTS": str(certificates.ca)}))
    yield driver
    io_loop.run_sync(driver.close)


# -- helpers ----------------------------------------------------------------------------

class TrustingBackend(RequestsBackend):
    """The SDK's requests backend, verifying against the test CA rather than its bundle."""

    ca: str = ""

    def __init__(self, client: Any, **options: Any) -> None:
        super().__init__(client, **options)
        self.options["verify"] = self.ca


def sdk(deployment: Deployment, *, tls: bool = False) -> pusher.Pusher:
    """The official SDK aimed at nginx: http, or https verified against the test CA."""
    if not tls:
        return pusher.Pusher(app_id=MAIN.id, key=MAIN.key, secret=MAIN.secret,
                             host="127.0.0.1", port=deployment.port, ssl=False)
    backend = type("Backend", (TrustingBackend,), {"ca": str(deployment.certificates.ca)})
    return pusher.Pusher(app_id=MAIN.id, key=MAIN.key, secret=MAIN.secret, host="127.0.0.1",
                         port=deployment.tls_port, ssl=True, backend=backend)


async def trigger(client: pusher.Pusher, channel: str, event: str, data: Any = None) -> None:
    await in_thread(client.trigger, channel, event, {} if data is None else data)


async def node_of_process(deployment: Deployment, number: int) -> int:
    """The node id a process reports on ``/health`` (asked directly, not through nginx)."""
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{deployment.process_port(number)}/health", raise_error=False)
    assert response.code == 200, (response.code, response.body)
    return json.loads(response.body)["node"]


async def until_ready(deployment: Deployment, number: int, timeout: float = 10.0) -> None:
    """Poll a process's ``/ready`` until 200 (bounded): nothing announces readiness.

    supervisord reports a process running after ``startsecs``, which may be
    before it listens (a slow start on a loaded machine): a refused connection
    is not ready yet either.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = await tornado.httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{deployment.process_port(number)}/ready", raise_error=False)
            answer: int | str = response.code
        except ConnectionRefusedError:
            answer = "connection refused"
        if answer == 200:
            return
        assert time.monotonic() < deadline, f"push-{number} not ready: {answer}"
        await asyncio.sleep(0.1)  # a polling period, not synchronisation


def socket_id(client: JSClient) -> str:
    return client.seen(type="connected")[-1]["socket_id"]


def node(client: JSClient) -> int:
    return int(socket_id(client).split(".")[0])


async def expect_event(client: JSClient, channel: str, event: str, timeout: float = 5.0) -> Any:
    return (await client.expect(type="channel_event", channel=channel, event=event,
                                timeout=timeout))["data"]


def events_since(js: PusherJS, mark: int, client: JSClient, **match: Any) -> list[dict]:
    return [event for event in js.events[mark:] if event.get("client") == client.name
            and all(event.get(key) == value for key, value in match.items())]



async def fallback_session_node(base: str, session: str) -> int:
    """Open an xhr_polling session ``{server}/{session}`` through nginx at ``base``
    (``http://host:port``) as pusher-js would; the node its socket id names."""
    url = f"{base}/pusher/app/{MAIN.key}/{session}/xhr?protocol=7"
    frames: list[str] = []
    for _ in range(3):  # the greeting may come after the first poll was answered ("o")
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            url, method="POST", body="", headers={"Content-Type": "application/json"})
        frames += [line for line in response.body.decode().splitlines() if line.startswith("a")]
        if frames:
            break
    established = json.loads(json.loads(frames[0][1:])[0])
    assert established["event"] == "pusher:connection_established", established
    return int(json.loads(established["data"])["socket_id"].split(".")[0])


# -- tests ------------------------------------------------------------------------------

@needs_nginx
@pytest.mark.timeout(180)
@pytest.mark.gen_test(timeout=150)
async def test_rolling_restart_through_nginx_reconnects_clients_without_a_presence_leave(
        deploy, certificates, js, server_port):
    deployment = await deploy(tls=certificates)
    nodes = {await node_of_process(deployment, number): number for number in range(2)}
    assert len(nodes) == 2, nodes

    # pusher-js through nginx: ws:// to the plain port, wss:// to the TLS one.
    clients: dict[str, JSClient] = {}
    for name, tls in (("alice", False), ("bob", True), ("carol", False), ("dave", True)):
        client = js.client(name)
        base = f"http://127.0.0.1:{server_port}/test/{MAIN.key}"
        port = {"wssPort": deployment.tls_port, "forceTLS": True} if tls else {}
        await client.connect(MAIN.key, deployment.port, auth_endpoint=f"{base}/auth?user={name}",
                             **port)
        await client.expect(type="connected", timeout=10)
        await subscribed(client, "news")
        await subscribed(client, "presence-room")
        clients[name] = client
    everyone = list(clients.values())
    on_process = {number: [c for c in everyone if nodes.get(node(c)) == number]
                  for number in range(2)}
    # least_conn spreads four sequential connections two and two.
    assert all(on_process.values()), {n: [c.name for c in cs] for n, cs in on_process.items()}
    victim = nodes[node(clients["alice"])]
    movers, stayers = on_process[victim], on_process[1 - victim]

    # The SDK publishes through nginx, over http and over https (verified).
    http_sdk, https_sdk = sdk(deployment), sdk(deployment, tls=True)
    await trigger(http_sdk, "news", "before", {"via": "http"})
    await trigger(https_sdk, "news", "before", {"via": "https"})
    for client in everyone:
        assert [await expect_event(client, "news", "before") for _ in range(2)] == [
            {"via": "http"}, {"via": "https"}], client.name
        assert (await client.members("presence-room"))["count"] == 4, client.name

    # Restart the process that holds alice while everyone is connected.
    mark = len(js.events)
    old_ids = {client.name: socket_id(client) for client in everyone}
    old_pid = deployment.pid_of(victim)
    started = time.monotonic()
    restart = asyncio.ensure_future(in_thread(deployment.ctl, "restart", f"push:push-{victim}"))
    reconnected_after = {}
    for client in movers:
        await client.expect(type="connected", timeout=GRACE)
        reconnected_after[client.name] = time.monotonic() - started
    await restart
    restart_took = time.monotonic() - started
    print(f"reconnects after {reconnected_after}; restart took {restart_took:.1f} s")
    assert max(reconnected_after.values()) < GRACE, reconnected_after

    for client in movers:
        # pusher:error 4200, then connecting -> connected on a new socket, on the other process.
        assert 4200 in error_codes(client), client.seen(type="error")
        states = [(e["previous"], e["current"]) for e in events_since(js, mark, client, type="state")]
        assert states[:2] == [("connected", "connecting"), ("connecting", "connected")], states
        assert socket_id(client) != old_ids[client.name]
        assert nodes.get(node(client)) == 1 - victim, socket_id(client)
        # pusher-js subscribes again by itself on the new connection.
        await client.expect(type="channel_event", channel="presence-room",
                            event="pusher:subscription_succeeded")
        await client.expect(type="channel_event", channel="news",
                            event="pusher:subscription_succeeded")
    for client in stayers:
        assert events_since(js, mark, client, type="state") == [], client.name
        assert socket_id(client) == old_ids[client.name]

    # The old process drained and exited by itself within the drain timeout: not killed.
    assert not alive(old_pid)
    supervisord_log = (deployment.run_dir / "supervisord.log").read_text()
    assert f"stopped: push-{victim} (exit status 0)" in supervisord_log, supervisord_log
    assert "drained" in (deployment.run_dir / "logs" / f"push-{victim}.log").read_text()
    await until_ready(deployment, victim)

    # Nobody saw anyone leave or join: the movers came back within the grace window.
    # The old process let their old memberships go before it exited, so a leave
    # would have been published before this sentinel.
    await trigger(http_sdk, "presence-room", "sentinel")
    for client in everyone:
        await expect_event(client, "presence-room", "sentinel")
        for event in ("pusher:member_removed", "pusher:member_added"):
            assert events_since(js, mark, client, type="channel_event", channel="presence-room",
                                event=event) == [], (client.name, event)
        members = await client.members("presence-room")
        assert sorted(members["members"]) == ["alice", "bob", "carol", "dave"], client.name

    # Later events reach everyone, once, over both nginx ports.
    await trigger(https_sdk, "news", "after", {"via": "https"})
    await trigger(http_sdk, "news", "after", {"via": "http"})
    for client in everyone:
        assert [await expect_event(client, "news", "after") for _ in range(2)] == [
            {"via": "https"}, {"via": "http"}], client.name

    # The restarted process is back in the cluster: a newcomer lands on it (it has
    # the fewest connections) and everyone sees her join and gets her events.
    new_node = await node_of_process(deployment, victim)
    erin = js.client("erin")
    await erin.connect(MAIN.key, deployment.tls_port, forceTLS=True, wssPort=deployment.tls_port,
                       auth_endpoint=f"http://127.0.0.1:{server_port}/test/{MAIN.key}/auth?user=erin")
    await erin.expect(type="connected", timeout=10)
    assert node(erin) == new_node, (socket_id(erin), new_node)
    await subscribed(erin, "presence-room")
    for client in everyone:
        await client.expect(type="channel_event", channel="presence-room",
                            event="pusher:member_added", data={"id": "erin", "info": {"name": "Erin"}})
    await trigger(https_sdk, "presence-room", "welcome", {"to": "erin"})
    for client in everyone + [erin]:
        assert await expect_event(client, "presence-room", "welcome") == {"to": "erin"}


@needs_nginx
@pytest.mark.timeout(120)
@pytest.mark.gen_test(timeout=90)
async def test_processes_see_the_client_address_nginx_saw_and_stop_sh_stops_everything(deploy):
    """Per-IP limits count the address nginx saw, not nginx's own.

    Clients connect from other loopback addresses (127.0.0.2, 127.0.0.3): a
    process that took nginx's address (127.0.0.1) for every client would count
    them all as one.
    """
    deployment = await deploy(PUSH_MAX_CONNECTIONS_PER_IP="2")
    sockets: list[tornado.websocket.WebSocketClientConnection] = []

    async def open_from(address: str, **headers: str) -> tuple[dict, int | None]:
        """A WebSocket through nginx from ``address``: its first frame, and its close
        code if the server closed it at once."""
        request = tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{deployment.port}/app/{MAIN.key}?protocol=7",
            network_interface=address, headers=headers)
        connection = await tornado.websocket.websocket_connect(request)
        sockets.append(connection)
        frame = json.loads(await asyncio.wait_for(connection.read_message(), 5))
        if frame["event"] == "pusher:connection_established":
            return frame, None
        assert await asyncio.wait_for(connection.read_message(), 5) is None  # closed
        return frame, connection.close_code

    try:
        # Two per process from 127.0.0.2: nginx spreads them, so four are
        # accepted and the fifth is refused by whichever process it reaches.
        outcomes = [await open_from("127.0.0.2") for _ in range(5)]
        assert [code for _, code in outcomes] == [None, None, None, None, 4004], outcomes
        refusal = json.loads(outcomes[-1][0]["data"]) if isinstance(
            outcomes[-1][0]["data"], str) else outcomes[-1][0]["data"]
        assert outcomes[-1][0]["event"] == "pusher:error" and refusal["code"] == 4004, outcomes
        assert "127.0.0.2" in refusal["message"], refusal
        # A forged X-Real-IP is replaced by nginx: still 127.0.0.2, still refused.
        _, code = await open_from("127.0.0.2", **{"X-Real-IP": "203.0.113.9",
                                                  "X-Forwarded-For": "203.0.113.9"})
        assert code == 4004
        # Another address is counted on its own.
        frame, code = await open_from("127.0.0.3")
        assert code is None, frame
    finally:
        for connection in sockets:
            connection.close()

    # stop.sh stops nginx, supervisord and every process, and removes their pid files.
    pids = set(deployment.pids) | {deployment.pid_of(number) for number in range(2)}
    stopped = await in_thread(deployment.stop)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [pid for pid in pids if alive(pid)] == []
    assert not (deployment.run_dir / "nginx.pid").exists()
    assert not (deployment.run_dir / "supervisord.pid").exists()
    for port in (deployment.port, deployment.process_port(0), deployment.process_port(1)):
        assert not listening(port), port
    again = await in_thread(deployment.stop)  # nothing left: not an error
    assert again.returncode == 0, again.stdout + again.stderr


@needs_nginx
@pytest.mark.timeout(120)
@pytest.mark.gen_test(timeout=90)
async def test_nginx_passes_the_origin_on_so_a_refused_page_gets_4009(deploy):
    deployment = await deploy(processes=1, PUSH_APP_ALLOWED_ORIGINS="https://app.example.com")

    async def open_from(origin: str) -> tuple[list[dict], int | None]:
        """A WebSocket through nginx from a page of ``origin``: its first frame, and its
        close code if the server closed it at once."""
        connection = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{deployment.port}/app/{MAIN.key}?protocol=7",
            headers={"Origin": origin}))
        frame = json.loads(await asyncio.wait_for(connection.read_message(), 5))
        if frame["event"] == "pusher:connection_established":
            connection.close()
            return frame, None
        assert await asyncio.wait_for(connection.read_message(), 5) is None  # closed
        return frame, connection.close_code

    frame, code = await open_from("https://app.example.com")
    assert code is None, frame
    frame, code = await open_from("https://evil.example")
    assert (frame["data"], code) == (
        {"code": 4009, "message": "Origin not allowed: https://evil.example"}, 4009)


@needs_nginx
@pytest.mark.timeout(120)
@pytest.mark.gen_test(timeout=90)
async def test_prometheus_targets_list_every_process_and_nginx_keeps_operator_paths_private(
        deploy, certificates):
    """Prometheus scrapes each process on its own port (the targets file); nginx's
    public site answers /metrics and /admin itself, on both ports, without
    passing them to whichever process least_conn picks."""
    deployment = await deploy(processes=3, tls=certificates)
    targets = json.loads((deployment.run_dir / "prometheus-targets.json").read_text())
    ports = [deployment.process_port(number) for number in range(3)]
    assert targets == [{"targets": [f"127.0.0.1:{port}" for port in ports],
                        "labels": {"job": "tornado_push"}}]
    # Every target is a process (its /health names a node of its own).
    assert len({await node_of_process(deployment, number) for number in range(3)}) == 3

    client = tornado.httpclient.AsyncHTTPClient()
    bases = [f"http://127.0.0.1:{deployment.port}", f"https://127.0.0.1:{deployment.tls_port}"]
    for base in bases:
        for path in ("/metrics", "/metrics?name[]=up", "/metrics/", "/admin", "/admin/",
                     "/admin/login", "/admin/api/nodes"):
            response = await client.fetch(base + path, raise_error=False,
                                          ca_certs=str(certificates.ca))
            # nginx's own answer: a process's 404 (Tornado's page) or its metrics would
            # say otherwise.
            assert (response.code, response.body) == (
                404, b"Not found: operator paths are not served here\n"), (base, path)
        # Everything else still reaches the processes.
        health = await client.fetch(base + "/health", ca_certs=str(certificates.ca))
        assert json.loads(health.body)["status"] == "ok"
    # No process saw them (each logs every request it answers, 404s as warnings).
    for number in range(3):
        log = (deployment.run_dir / "logs" / f"push-{number}.log").read_text()
        assert "GET /ready" in log, log  # start.sh's readiness checks: requests are logged
        assert "/metrics" not in log and "/admin" not in log, (number, log)


@pytest.mark.gen_test(timeout=90)
async def test_reload_sh_has_every_process_serve_the_apps_file_as_it_is_now(deploy, tmp_path):
    apps_file = tmp_path / "apps.json"
    apps_file.write_text(json.dumps([{"id": "21", "key": "first-key", "secret": "first-secret"}]))
    deployment = await deploy(PUSH_DEFAULT_APP="false", PUSH_APPS_FILE=str(apps_file))

    async def first_frame(port: int, key: str) -> dict:
        connection = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{port}/app/{key}?protocol=7")
        try:
            return json.loads(await asyncio.wait_for(connection.read_message(), 5))
        finally:
            connection.close()

    ports = [deployment.process_port(number) for number in range(2)]
    for port in ports:
        assert (await first_frame(port, "second-key"))["event"] == "pusher:error"
    apps_file.write_text(json.dumps([{"id": "21", "key": "first-key", "secret": "first-secret"},
                                     {"id": "22", "key": "second-key", "secret": "second"}]))
    reloaded = await in_thread(subprocess.run, [str(RELOAD), "--run-dir", str(deployment.run_dir)],
                               env=deployment.env, capture_output=True, text=True, timeout=60)
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    for number, port in enumerate(ports):  # each process, and through nginx
        log = deployment.run_dir / "logs" / f"push-{number}.log"
        await until(lambda: "apps reloaded: 22 added" in log.read_text(), timeout=20)
        assert (await first_frame(port, "second-key"))["event"] == "pusher:connection_established"
    assert ((await first_frame(deployment.port, "second-key"))["event"]
            == "pusher:connection_established")


def test_start_refuses_several_processes_without_redis(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSH_")}
    run_dir = tmp_path / "run"
    refused = subprocess.run([str(START), "--processes", "2", "--port", str(free_port()),
                              "--run-dir", str(run_dir)], env={**env, "PYTHON": sys.executable},
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2
    assert "PUSH_REDIS_URL is not set" in refused.stderr, refused.stderr
    assert not run_dir.exists() or not any(run_dir.glob("*.pid"))


def test_rendered_supervisord_conf_gives_the_processes_their_environment_exactly(
        tmp_path: Path) -> None:
    """Quotes, '%' (supervisor's expansions) and URL escapes survive supervisor's parser."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSH_")}
    tricky = {"PUSH_REDIS_URL": "redis://:p%23%24%25%40%3A%2F%3F%26%3D@127.0.0.1:6379/0",
              "PUSH_APP_SECRET": 'a "quoted", 100% =;# secret', "PUSH_APP_KEY": "key-1"}

    def render(**variables: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "supervisor" / "kit.py"), "render", "--run-dir",
             str(tmp_path / "run"), "--processes", "2", "--port", str(free_port()),
             "--first-process-port", str(consecutive_free_ports(2))],
            env={**env, **variables}, capture_output=True, text=True, timeout=30)

    # supervisor's parser has no escapes: a value with both quotes is refused, by name only.
    refused = render(**{**tricky, "PUSH_APP_SECRET": "it's \"secret\""})
    assert refused.returncode == 1
    assert "PUSH_APP_SECRET: its value cannot be written" in refused.stderr, refused.stderr
    assert "secret\"" not in refused.stderr
    rendered = render(**tricky)
    assert rendered.returncode == 0, rendered.stderr
    # supervisor's own parser, run outside the repository (whose supervisor/ is no package).
    parsed = subprocess.run([sys.executable, "-c", (
        "import json, sys\n"
        "from supervisor.options import ServerOptions\n"
        "options = ServerOptions()\n"
        "options.realize(['-c', sys.argv[1]])\n"
        "print(json.dumps({p.name: [p.command, p.environment]\n"
        "                  for g in options.process_group_configs for p in g.process_configs}))\n"),
        str(tmp_path / "run" / "supervisord.conf")], cwd=tmp_path, capture_output=True,
        text=True, timeout=30)
    assert parsed.returncode == 0, parsed.stderr
    processes = json.loads(parsed.stdout)
    assert sorted(processes) == ["push-0", "push-1"]
    for number, (command, environment) in enumerate(processes[f"push-{n}"] for n in range(2)):
        assert environment == {**tricky, "PUSH_XHEADERS": "true"}
        assert f"$(($2 + {number}))" in command
    assert (tmp_path / "run" / "supervisord.conf").stat().st_mode & 0o077 == 0  # secrets


@needs_nginx
@pytest.mark.timeout(150)
@pytest.mark.gen_test(timeout=120)
async def test_http_fallback_through_nginx_keeps_each_session_on_its_process(
        deploy, certificates, js, server_port):
    """pusher-js's xhr_streaming and xhr_polling through nginx, plain and TLS, on
    three processes: each session's requests all reach the process holding it
    (elsewhere its xhr_send would get 404 and its next poll a new session), while
    sessions from one client address still spread over the processes. An SSE
    stream through nginx gets the same publishes."""
    deployment = await deploy(processes=3, tls=certificates)
    nodes = {await node_of_process(deployment, number): number for number in range(3)}
    plain = f"http://127.0.0.1:{deployment.port}"

    # Sessions are routed by their path, not by the client's address (all of
    # these come from 127.0.0.1): they land on more than one process, and each
    # one's xhr_send reaches the process that knows it.
    sessions = {f"{n}/stick{n:03d}{uuid.uuid4().hex[:6]}": 0 for n in range(24)}
    for session in sessions:
        sessions[session] = await fallback_session_node(plain, session)
        sent = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"{plain}/pusher/app/{MAIN.key}/{session}/xhr_send", method="POST", body="[]",
            headers={"Content-Type": "application/json"}, raise_error=False)
        assert sent.code == 204, (session, sent.code)
    assert len(set(sessions.values())) > 1, sessions
    assert set(sessions.values()) <= set(nodes)

    # Real pusher-js: alice streams over http, bob polls over https, carol uses a
    # WebSocket (least_conn); all meet on one presence channel.
    base = f"http://127.0.0.1:{server_port}/test/{MAIN.key}"
    transports = {"alice": ("xhr_streaming", False), "bob": ("xhr_polling", True),
                  "carol": ("ws", False)}
    clients: dict[str, JSClient] = {}
    for name, (transport, tls) in transports.items():
        client = js.client(name)
        options = ({"forceTLS": True, "httpsPort": deployment.tls_port,
                    "wssPort": deployment.tls_port} if tls
                   else {"forceTLS": False, "httpPort": deployment.port})
        await client.connect(MAIN.key, deployment.port, auth_endpoint=f"{base}/auth?user={name}",
                             enabledTransports=[transport], httpHost="127.0.0.1", **options)
        await client.expect(type="connected", timeout=15)
        await subscribed(client, "news")
        await subscribed(client, "presence-room")
        clients[name] = client
    everyone = list(clients.values())
    for name in ("alice", "bob"):  # carol joined last, on a WebSocket
        added = await expect_event(clients[name], "presence-room", "pusher:member_added",
                                   timeout=10)
        if added["id"] == "bob":  # alice saw bob join first
            added = await expect_event(clients[name], "presence-room", "pusher:member_added",
                                       timeout=10)
        assert added["id"] == "carol", name
    # Counted only once carol's member_added has reached the HTTP sessions: it comes
    # through Redis from carol's process, after carol's own subscription succeeded.
    for client in everyone:
        assert (await client.members("presence-room"))["count"] == 3, client.name

    # An SSE stream through nginx too (its own unbuffered location).
    stream = await SSEClient.open(deployment.port, query="channels=news",
                                  headers={"Host": f"127.0.0.1:{deployment.port}"})
    assert stream.status == 200, stream.head

    # A publish made to each process directly reaches everyone, wherever they are.
    for number in range(3):
        direct = pusher.Pusher(app_id=MAIN.id, key=MAIN.key, secret=MAIN.secret,
                               host="127.0.0.1", port=deployment.process_port(number), ssl=False)
        await trigger(direct, "news", "headline", {"from": number})
    for client in everyone:
        assert [await expect_event(client, "news", "headline", timeout=15)
                for _ in range(3)] == [{"from": 0}, {"from": 1}, {"from": 2}], client.name
    try:
        assert [json.loads((await stream.expect("headline", timeout=15))["data"])
                for _ in range(3)] == [{"from": 0}, {"from": 1}, {"from": 2}]
    finally:
        stream.close()

    # A client event from the streaming session reaches the others; carol leaving
    # is seen by both HTTP sessions.
    assert await clients["alice"].trigger("presence-room", "client-wave", {"by": "alice"})
    for name in ("bob", "carol"):
        assert await expect_event(clients[name], "presence-room", "client-wave",
                                  timeout=15) == {"by": "alice"}
    await clients["carol"].disconnect()
    for name in ("alice", "bob"):
        removed = await expect_event(clients[name], "presence-room", "pusher:member_removed",
                                     timeout=15)
        assert removed["id"] == "carol", name
    # Each HTTP client kept its first session throughout (no reconnect after a 404).
    for name in ("alice", "bob"):
        assert len(clients[name].seen(type="connected")) == 1, name
        assert error_codes(clients[name]) == [], name
    # nginx's access log shows the requests but never a session (its only credential).
    log = (deployment.run_dir / "logs" / "nginx-access.log").read_text()
    assert f'"POST /pusher/app/{MAIN.key}/.../xhr_send HTTP/1.1" 204' in log, log
    assert "stick" not in log, log


@needs_nginx
@pytest.mark.timeout(120)
@pytest.mark.gen_test(timeout=90)
async def test_browser_streams_over_http2_through_nginx_tls(
        deploy, certificates, page_origin, browser: Browser):
    """Chromium's xhr_streaming session through nginx's TLS server, over HTTP/2 (one
    connection for all of a browser's streams), passes frames as they come; a
    WebSocket from the same browser to the same server still works (HTTP/1.1)."""
    deployment = await deploy(tls=certificates)
    pages = {}
    for transport in ("xhr_streaming", "ws"):
        page = await browser.open(f"{page_origin}/page", name=transport, ignore_https_errors=True)
        await page.evaluate("window.start", [MAIN.key, {
            "wsHost": "127.0.0.1", "wssPort": deployment.tls_port, "httpHost": "127.0.0.1",
            "httpsPort": deployment.tls_port, "forceTLS": True, "enabledTransports": [transport]}])
        await seen(page, "subscribed")
        pages[transport] = page
    await trigger(sdk(deployment, tls=True), "news", "headline", {"n": 1})
    for transport, page in pages.items():
        assert [event["data"] for event in await seen(page, "headline")] == [{"n": 1}], transport
    page = pages["xhr_streaming"]
    log = (deployment.run_dir / "logs" / "nginx-access.log").read_text()
    # Every request of the session that ended went over HTTP/2 (nginx logs a request
    # when it ends: not the open stream, nor the WebSocket), and the log hides the session.
    assert re.search(rf'"POST /pusher/app/{MAIN.key}/\.\.\./xhr_send\?\S* HTTP/2\.0" 204', log), log
    assert not re.search(r'"\w+ /pusher/\S* HTTP/1', log), log
    assert len(await seen(page, "connected")) == 1
    browser.assert_no_errors()
