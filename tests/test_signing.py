"""Signatures: ours must accept exactly what the official ``pusher`` SDK signs, and nothing else.

Channel auth, user sign-in and HTTP API request signing, checked against the
documented test vector, against the SDK's own output, and against tampering.
"""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import parse_qsl

import pusher
import pytest
from pusher.http import Request
from pusher.pusher_client import PusherClient

from tornado_push.pubsub.apps import App
from tornado_push.pubsub.errors import ApiError
from tornado_push.pubsub.signing import (TIMESTAMP_WINDOW_SECONDS, sign, verify_channel_auth,
                            verify_request, verify_user_auth)

#: The test vector of Pusher's auth-signatures documentation.
VECTOR = App(id="1", key="278d425bdf160c739803", secret="7ad3773142a6692b25b8")
VECTOR_SIGNATURE = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"

APP = App(id="42", key="signing-key", secret="signing-secret")
NOW = 1_700_000_000
SOCKET_ID = "1234.5678"


def sdk(app: App) -> pusher.Pusher:
    return pusher.Pusher(app_id=app.id, key=app.key, secret=app.secret)


def tampered(text: str, index: int = -2) -> str:
    """``text`` with one character changed."""
    changed = "0" if text[index] != "0" else "1"
    return text[:index] + changed + text[index + 1:]


# -- channel auth ----------------------------------------------------------------

def test_sign_matches_the_documented_test_vector():
    assert sign(VECTOR.secret, "1234.1234:private-foobar") == VECTOR_SIGNATURE


def test_documented_private_channel_auth_verifies():
    auth = f"{VECTOR.key}:{VECTOR_SIGNATURE}"
    assert verify_channel_auth(VECTOR, "1234.1234", "private-foobar", auth)


def test_sdk_private_channel_auth_is_the_documented_string_byte_for_byte():
    assert sdk(VECTOR).authenticate("private-foobar", "1234.1234") == {
        "auth": f"{VECTOR.key}:{VECTOR_SIGNATURE}"}


def test_private_channel_auth_is_bound_to_socket_and_channel():
    auth = f"{VECTOR.key}:{VECTOR_SIGNATURE}"
    assert not verify_channel_auth(VECTOR, "1234.1235", "private-foobar", auth)
    assert not verify_channel_auth(VECTOR, "1234.1234", "private-foobaz", auth)
    assert not verify_channel_auth(VECTOR, "1234.1234", "private-foobar", tampered(auth))


def test_sdk_presence_auth_verifies_with_its_channel_data():
    signed = sdk(APP).authenticate("presence-room", SOCKET_ID,
                                   {"user_id": "alice", "user_info": {"name": "Alice"}})
    assert verify_channel_auth(APP, SOCKET_ID, "presence-room", signed["auth"],
                               signed["channel_data"])


def test_presence_auth_fails_when_one_byte_of_channel_data_changes():
    signed = sdk(APP).authenticate("presence-room", SOCKET_ID, {"user_id": "alice"})
    forged_data = signed["channel_data"].replace("alice", "alicf")
    assert forged_data != signed["channel_data"]
    assert not verify_channel_auth(APP, SOCKET_ID, "presence-room", signed["auth"], forged_data)


def test_presence_auth_fails_without_its_channel_data():
    signed = sdk(APP).authenticate("presence-room", SOCKET_ID, {"user_id": "alice"})
    assert not verify_channel_auth(APP, SOCKET_ID, "presence-room", signed["auth"])


def test_channel_auth_fails_under_another_key_prefix():
    signed = sdk(APP).authenticate("presence-room", SOCKET_ID, {"user_id": "alice"})
    signature = signed["auth"].partition(":")[2]
    for auth in (f"other-key:{signature}", signature, f":{signature}"):
        assert not verify_channel_auth(APP, SOCKET_ID, "presence-room", auth,
                                       signed["channel_data"])


def test_channel_auth_signed_with_another_secret_fails():
    forger = pusher.Pusher(app_id=APP.id, key=APP.key, secret="not-the-secret")
    signed = forger.authenticate("private-orders", SOCKET_ID)
    assert not verify_channel_auth(APP, SOCKET_ID, "private-orders", signed["auth"])


@pytest.mark.parametrize("auth", [None, 42, "", ["signing-key:abc"]])
def test_channel_auth_that_is_not_a_string_fails(auth):
    assert not verify_channel_auth(APP, SOCKET_ID, "private-orders", auth)


# -- user sign-in ----------------------------------------------------------------

def test_sdk_user_sign_in_verifies():
    signed = sdk(APP).authenticate_user(SOCKET_ID, {"id": "alice", "watchlist": ["bob"]})
    assert verify_user_auth(APP, SOCKET_ID, signed["user_data"], signed["auth"])


def test_user_sign_in_fails_when_user_data_or_socket_changes():
    signed = sdk(APP).authenticate_user(SOCKET_ID, {"id": "alice"})
    forged_data = json.dumps({"id": "mallory"})
    assert not verify_user_auth(APP, SOCKET_ID, forged_data, signed["auth"])
    assert not verify_user_auth(APP, "1234.5679", signed["user_data"], signed["auth"])
    assert not verify_user_auth(APP, SOCKET_ID, signed["user_data"], tampered(signed["auth"]))


def test_user_sign_in_is_not_a_channel_auth():
    signed = sdk(APP).authenticate_user(SOCKET_ID, {"id": "alice"})
    assert not verify_channel_auth(APP, SOCKET_ID, "private-orders", signed["auth"])


# -- HTTP API request signing ------------------------------------------------------

def sdk_request(make) -> tuple[str, str, dict[str, str], bytes]:
    """What the SDK puts on the wire for ``make(client)``: method, path, query, body."""
    client = PusherClient(app_id=APP.id, key=APP.key, secret=APP.secret)
    request: Request = make(client)
    path, _, query = request.signed_path.partition("?")
    return request.method, path, dict(parse_qsl(query, keep_blank_values=True)), request.body


def hand_signed(method: str, path: str, body: bytes = b"", *, app: App = APP,
                timestamp: int = NOW, **params: str) -> dict[str, str]:
    """The query of a request signed step by step as protocol.md describes."""
    query = {"auth_key": app.key, "auth_timestamp": str(timestamp), "auth_version": "1.0",
             **params}
    if body:
        query["body_md5"] = hashlib.md5(body).hexdigest()
    lowered = {name.lower(): value for name, value in query.items()}
    string = "&".join(f"{name}={lowered[name]}" for name in sorted(lowered))
    query["auth_signature"] = sign(app.secret, f"{method}\n{path}\n{string}")
    return query


def refusal(query: dict[str, str], body: bytes = b"", *, method: str = "POST",
            path: str = "/apps/42/events", now: float = NOW) -> ApiError:
    with pytest.raises(ApiError) as refused:
        verify_request(APP, method, path, query, body, now)
    assert refused.value.status == 401
    return refused.value


EVENT_BODY = b'{"name":"e","channels":["news"],"data":"{}"}'


def test_sdk_trigger_request_is_accepted():
    method, path, query, body = sdk_request(
        lambda client: client.trigger.make_request(["news", "sport"], "headline", {"n": 1}))
    assert (method, path) == ("POST", "/apps/42/events")
    verify_request(APP, method, path, query, body, time.time())


def test_sdk_batch_request_is_accepted():
    method, path, query, body = sdk_request(lambda client: client.trigger_batch.make_request(
        [{"channel": "news", "name": "a", "data": "1"}]))
    verify_request(APP, method, path, query, body, time.time())


def test_sdk_get_with_body_md5_of_the_empty_body_is_accepted():
    method, path, query, body = sdk_request(lambda client: client.channels_info.make_request(
        prefix_filter="presence-", attributes=["user_count"]))
    assert method == "GET" and body == b""
    assert query["body_md5"] == hashlib.md5(b"").hexdigest()
    verify_request(APP, method, path, query, body, time.time())


def test_hand_signed_request_is_accepted():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    verify_request(APP, "POST", "/apps/42/events", query, EVENT_BODY, NOW)


def test_get_without_body_md5_is_accepted():
    query = hand_signed("GET", "/apps/42/channels", filter_by_prefix="presence-")
    assert "body_md5" not in query
    verify_request(APP, "GET", "/apps/42/channels", query, b"", NOW)


def test_param_keys_are_lower_cased_and_sorted_before_signing():
    query = hand_signed("GET", "/apps/42/channels", Info="user_count", FILTER_BY_PREFIX="presence-")
    assert {"Info", "FILTER_BY_PREFIX"} <= set(query)
    verify_request(APP, "GET", "/apps/42/channels", query, b"", NOW)


def test_timestamp_at_the_edge_of_the_window_is_accepted():
    for offset in (-TIMESTAMP_WINDOW_SECONDS, TIMESTAMP_WINDOW_SECONDS):
        query = hand_signed("POST", "/apps/42/events", EVENT_BODY, timestamp=NOW + offset)
        verify_request(APP, "POST", "/apps/42/events", query, EVENT_BODY, NOW)


@pytest.mark.parametrize("missing", ["auth_signature", "auth_key", "auth_timestamp"])
def test_request_missing_an_auth_param_is_refused(missing):
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    del query[missing]
    refusal(query, EVENT_BODY)


def test_request_with_an_empty_signature_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    refusal({**query, "auth_signature": ""}, EVENT_BODY)


def test_request_signed_under_another_key_is_refused():
    other = App(id="42", key="other-key", secret=APP.secret)
    error = refusal(hand_signed("POST", "/apps/42/events", EVENT_BODY, app=other), EVENT_BODY)
    assert "auth_key" in error.message


def test_request_signed_with_another_secret_is_refused():
    forger = App(id="42", key=APP.key, secret="not-the-secret")
    error = refusal(hand_signed("POST", "/apps/42/events", EVENT_BODY, app=forger), EVENT_BODY)
    assert "signature" in error.message


@pytest.mark.parametrize("offset", [-TIMESTAMP_WINDOW_SECONDS - 1, TIMESTAMP_WINDOW_SECONDS + 1])
def test_request_601_seconds_off_is_refused(offset):
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY, timestamp=NOW + offset)
    assert "auth_timestamp" in refusal(query, EVENT_BODY).message


def test_request_with_a_non_numeric_timestamp_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    refusal({**query, "auth_timestamp": "yesterday"}, EVENT_BODY)


def test_request_whose_body_does_not_match_body_md5_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    other_body = EVENT_BODY.replace(b"news", b"nuws")
    assert "body_md5" in refusal(query, other_body).message


def test_request_with_a_body_but_no_body_md5_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    del query["body_md5"]
    refusal(query, EVENT_BODY)


def test_request_with_a_tampered_param_is_refused():
    query = hand_signed("GET", "/apps/42/channels", filter_by_prefix="presence-")
    refusal({**query, "filter_by_prefix": "private-"}, method="GET", path="/apps/42/channels")


def test_request_with_an_added_param_is_refused():
    query = hand_signed("GET", "/apps/42/channels")
    refusal({**query, "info": "user_count"}, method="GET", path="/apps/42/channels")


def test_request_signed_for_another_path_or_method_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY)
    refusal(query, EVENT_BODY, path="/apps/42/batch_events")
    refusal(query, EVENT_BODY, method="PUT")


def test_request_with_auth_version_2_is_refused():
    query = hand_signed("POST", "/apps/42/events", EVENT_BODY, auth_version="2.0")
    assert "auth_version" in refusal(query, EVENT_BODY).message
