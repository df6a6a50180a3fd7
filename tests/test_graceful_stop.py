"""Graceful stop, readiness, client addresses behind a proxy, and Tornado's own TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import AsyncIterator

import pytest
import tornado.httpclient
import tornado.websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import RawSocket
from redis_server import free_port
from server_processes import ServerProcess
from test_cluster_processes import connect_to, expect_event, received, sentinel  # noqa: F401
from test_pusherjs_client_events import error_codes


@pytest.mark.gen_test(timeout=60)
async def test_draining_process_keeps_presence_for_users_who_reconnect_elsewhere(
        server_processes, redis_server, connect_to):
    leaving, staying = await server_processes(2, PUSH_REDIS_URL=redis_server.url,
                                              PUSH_DRAIN_GRACE="2")
    alice = await connect_to("alice", leaving, user="alice")
    bob = await connect_to("bob", staying, user="bob")
    for client in (alice, bob):
        await client.subscribe("presence-room")
        await expect_event(client, "presence-room", "pusher:subscription_succeeded")
    stopping = asyncio.ensure_future(leaving.terminate())  # SIGTERM: drain
    await alice.expect(type="error")
    assert 4200 in error_codes(alice)
    # pusher-js would come back through nginx to another process; here, by hand.
    alice_again = await connect_to("alice-again", staying, user="alice")
    await alice_again.subscribe("presence-room")
    await expect_event(alice_again, "presence-room", "pusher:subscription_succeeded")
    assert await stopping == 0  # exits once the grace window is over
    await sentinel(staying, "presence-room", bob)
    assert received(bob, "presence-room", "pusher:member_removed") == []
    assert received(bob, "presence-room", "pusher:member_added") == []


@pytest.mark.gen_test(timeout=30)
async def test_drain_closes_clients_with_4200_refuses_new_ones_and_turns_ready_false(
        hub, raw, server_port):
    async def ready() -> tuple[int, dict]:
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server_port}/ready", raise_error=False)
        return response.code, json.loads(response.body)

    assert await ready() == (200, {"ready": True, "reason": None})
    socket = await raw()
    hub.drain(grace=0.1)
    assert (await socket.expect("pusher:error"))["data"]["code"] == 4200
    assert await socket.closed() == 4200
    assert await ready() == (503, {"ready": False, "reason": "draining"})
    late = await raw(established=False)
    assert (await late.receive())["data"]["code"] == 4200


async def open_socket(port: int, headers: dict[str, str] | None = None,
                      scheme: str = "ws", ssl_options: ssl.SSLContext | None = None) -> RawSocket:
    request = tornado.httpclient.HTTPRequest(f"{scheme}://127.0.0.1:{port}/app/app-key?protocol=7",
                                             headers=headers, ssl_options=ssl_options)
    return RawSocket(await tornado.websocket.websocket_connect(request))


@contextlib.asynccontextmanager
async def standalone_server(**env: str) -> AsyncIterator[int]:
    """``python server.py`` on the embedded default with ``env``; its port."""
    process = await ServerProcess(free_port(), {"PUSH_DRAIN_GRACE": "0", **env}).start()
    try:
        yield process.port
    finally:
        await process.terminate()


@pytest.mark.gen_test(timeout=30)
async def test_per_ip_limit_counts_the_address_the_proxy_reports():
    # PUSH_XHEADERS as the nginx kit sets it: X-Real-IP names the client.
    async with standalone_server(PUSH_XHEADERS="true", PUSH_MAX_CONNECTIONS_PER_IP="1") as port:
        first = await open_socket(port, {"X-Real-IP": "198.51.100.7"})
        assert (await first.receive())["event"] == "pusher:connection_established"
        again = await open_socket(port, {"X-Real-IP": "198.51.100.7"})
        refusal = await again.receive()
        assert refusal["data"]["code"] == 4004 and "198.51.100.7" in refusal["data"]["message"]
        other = await open_socket(port, {"X-Real-IP": "198.51.100.8"})
        assert (await other.receive())["event"] == "pusher:connection_established"


@pytest.mark.gen_test(timeout=30)
async def test_without_xheaders_a_client_cannot_claim_another_address():
    async with standalone_server(PUSH_MAX_CONNECTIONS_PER_IP="1") as port:
        first = await open_socket(port, {"X-Real-IP": "198.51.100.7"})
        assert (await first.receive())["event"] == "pusher:connection_established"
        spoofed = await open_socket(port, {"X-Real-IP": "198.51.100.8"})
        assert (await spoofed.receive())["data"]["code"] == 4004  # still 127.0.0.1


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.gen_test(timeout=30)
async def test_tornado_serves_wss_itself_with_a_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    async with standalone_server(PUSH_TLS_CERT=str(cert), PUSH_TLS_KEY=str(key)) as port:
        trusted = ssl.create_default_context(cafile=str(cert))
        socket = await open_socket(port, scheme="wss", ssl_options=trusted)
        assert (await socket.receive())["event"] == "pusher:connection_established"
        with pytest.raises(ssl.SSLError):  # plain default trust refuses the self-signed one
            await open_socket(port, scheme="wss", ssl_options=ssl.create_default_context())
