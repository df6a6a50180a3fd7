"""Redis settings: off by default, a URL or separate fields, refusals that name the variable.

The special-character password is the trap Django Channels users hit: it must
work percent-encoded in the URL and exactly as written in PUSH_REDIS_PASSWORD.
"""

from __future__ import annotations

import pytest

from tornado_push.pubsub.redis.client import RedisConfig, parse_url
from tornado_push.settings import load_settings
from test_settings import refused

PASSWORD = "p#$%@:/?&="
ENCODED = "p%23%24%25%40%3A%2F%3F%26%3D"


def endpoint(config: RedisConfig) -> dict:
    """Where a config connects, whichever form it was given in."""
    if config.url:
        return parse_url(config.url)
    return {"host": config.host, "port": config.port, "db": config.db,
            "username": config.username, "password": config.password, "tls": config.tls}


# -- accepted -------------------------------------------------------------------------

def test_redis_is_off_unless_a_url_or_host_is_set():
    assert load_settings({}).redis is None


def test_url_gives_everything_and_options_have_defaults():
    config = load_settings({"PUSH_REDIS_URL": "rediss://push:secret@redis.internal:6380/3"}).redis
    assert endpoint(config) == {"host": "redis.internal", "port": 6380, "db": 3,
                                "username": "push", "password": "secret", "tls": True}
    assert (config.cluster, config.prefix, config.heartbeat_interval) == (False, "push", 15.0)


def test_url_without_port_or_db_uses_6379_and_db_0():
    config = load_settings({"PUSH_REDIS_URL": "redis://localhost"}).redis
    assert endpoint(config) == {"host": "localhost", "port": 6379, "db": 0,
                                "username": None, "password": None, "tls": False}


def test_separate_fields_give_everything():
    config = load_settings({
        "PUSH_REDIS_HOST": "10.0.0.5", "PUSH_REDIS_PORT": "6390", "PUSH_REDIS_DB": "2",
        "PUSH_REDIS_USERNAME": "push", "PUSH_REDIS_PASSWORD": "secret", "PUSH_REDIS_TLS": "true",
    }).redis
    assert endpoint(config) == {"host": "10.0.0.5", "port": 6390, "db": 2,
                                "username": "push", "password": "secret", "tls": True}


def test_special_character_password_is_the_same_encoded_in_url_or_raw_in_field():
    from_url = load_settings({"PUSH_REDIS_URL": f"redis://:{ENCODED}@127.0.0.1:6379/0"}).redis
    from_field = load_settings({"PUSH_REDIS_HOST": "127.0.0.1", "PUSH_REDIS_PASSWORD": PASSWORD}).redis
    assert endpoint(from_url)["password"] == endpoint(from_field)["password"] == PASSWORD
    assert endpoint(from_url) == endpoint(from_field)


def test_special_character_username_is_decoded_from_the_url():
    config = load_settings({"PUSH_REDIS_URL": f"redis://us%40er:{ENCODED}@h:6379"}).redis
    assert endpoint(config)["username"] == "us@er"


def test_password_field_is_taken_exactly_as_written():
    config = load_settings({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PASSWORD": " %23 spaced "}).redis
    assert config.password == " %23 spaced "


def test_cluster_prefix_and_heartbeat():
    config = load_settings({"PUSH_REDIS_URL": "redis://h:7000", "PUSH_REDIS_CLUSTER": "yes",
                            "PUSH_REDIS_PREFIX": "staging:push", "PUSH_NODE_HEARTBEAT": "2.5",
                            "PUSH_REDIS_TIMEOUT": "0.5"}).redis
    assert ((config.cluster, config.prefix, config.heartbeat_interval, config.timeout)
            == (True, "staging:push", 2.5, 0.5))


def test_config_repr_shows_no_password():
    for environ in ({"PUSH_REDIS_URL": f"redis://:{ENCODED}@h"},
                    {"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PASSWORD": PASSWORD}):
        text = repr(load_settings(environ))
        assert ENCODED not in text and PASSWORD not in text


# -- refused --------------------------------------------------------------------------

@pytest.mark.parametrize("environ, names", [
    ({"PUSH_REDIS_URL": "http://h:6379"}, ["PUSH_REDIS_URL", "redis://"]),
    ({"PUSH_REDIS_URL": ""}, ["PUSH_REDIS_URL"]),
    ({"PUSH_REDIS_URL": "redis://"}, ["PUSH_REDIS_URL", "host"]),
    ({"PUSH_REDIS_URL": "redis://h:0"}, ["PUSH_REDIS_URL", "port"]),
    ({"PUSH_REDIS_URL": "redis://h:70000"}, ["PUSH_REDIS_URL", "port"]),
    ({"PUSH_REDIS_URL": "redis://h/cache"}, ["PUSH_REDIS_URL", "database number"]),
    ({"PUSH_REDIS_URL": "redis://h?db=1"}, ["PUSH_REDIS_URL", "query"]),
    ({"PUSH_REDIS_URL": "redis://h", "PUSH_REDIS_PASSWORD": "x"},
     ["PUSH_REDIS_PASSWORD", "PUSH_REDIS_URL"]),
    ({"PUSH_REDIS_URL": "redis://h", "PUSH_REDIS_HOST": "h"}, ["PUSH_REDIS_HOST", "PUSH_REDIS_URL"]),
    ({"PUSH_REDIS_PASSWORD": "x"}, ["PUSH_REDIS_PASSWORD", "PUSH_REDIS_HOST"]),
    ({"PUSH_REDIS_CLUSTER": "true"}, ["PUSH_REDIS_CLUSTER", "PUSH_REDIS_URL"]),
    ({"PUSH_REDIS_HOST": ""}, ["PUSH_REDIS_HOST"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PORT": "0"}, ["PUSH_REDIS_PORT"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PORT": "65536"}, ["PUSH_REDIS_PORT"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PORT": "six"}, ["PUSH_REDIS_PORT"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_DB": "-1"}, ["PUSH_REDIS_DB"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PASSWORD": ""}, ["PUSH_REDIS_PASSWORD"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_TLS": "maybe"}, ["PUSH_REDIS_TLS"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_CLUSTER": "maybe"}, ["PUSH_REDIS_CLUSTER"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_CLUSTER": "true", "PUSH_REDIS_DB": "1"}, ["PUSH_REDIS_DB"]),
    ({"PUSH_REDIS_URL": "redis://h/2", "PUSH_REDIS_CLUSTER": "true"}, ["PUSH_REDIS_URL"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PREFIX": "my app"}, ["PUSH_REDIS_PREFIX"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PREFIX": "app{1}"}, ["PUSH_REDIS_PREFIX"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_PREFIX": ""}, ["PUSH_REDIS_PREFIX"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_NODE_HEARTBEAT": "0"}, ["PUSH_NODE_HEARTBEAT"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_NODE_HEARTBEAT": "soon"}, ["PUSH_NODE_HEARTBEAT"]),
    ({"PUSH_REDIS_HOST": "h", "PUSH_REDIS_TIMEOUT": "0"}, ["PUSH_REDIS_TIMEOUT"]),
    ({"PUSH_REDIS_TIMEOUT": "1"}, ["PUSH_REDIS_TIMEOUT", "PUSH_REDIS_URL"]),
])
def test_invalid_redis_setting_is_refused_naming_it(environ, names):
    refused(environ, *names)


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@127.0.0.1:6379/0",
    "redis://:pass#word@127.0.0.1:6379/0",
    "redis://:pass/word@127.0.0.1:6379/0",
    "redis://:pass?word@127.0.0.1:6379/0",
])
def test_unencoded_special_characters_are_refused_with_a_hint_and_no_password(url):
    message = refused({"PUSH_REDIS_URL": url}, "PUSH_REDIS_URL", "percent-encode")
    for fragment in (PASSWORD, "pass", "word"):
        assert fragment not in message.split("(")[0], message
