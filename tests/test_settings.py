"""Configuration: defaults, every PUSH_* variable, flags, the apps file.

Every invalid value raises :class:`SettingsError` naming the setting, and
``server.py`` turns that into exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from tornado_push.handlers.fallback import FallbackOptions
from tornado_push.handlers.front import HTTPTimeouts
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.hub import HubOptions
from tornado_push.settings import DEFAULT_APP_SECRET, Settings, SettingsError, load_settings


def apps_file(tmp_path, content) -> str:
    """Write ``content`` (JSON-encoded unless a string) to a file; its path."""
    path = tmp_path / "apps.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def refused(environ: dict[str, str], *names: str) -> str:
    """The SettingsError message for ``environ``, checked to name each of ``names``."""
    with pytest.raises(SettingsError) as error:
        load_settings(environ)
    message = str(error.value)
    for name in names:
        assert name in message, message
    return message


# -- accepted -------------------------------------------------------------------------

def test_defaults_listen_on_loopback_6001_with_one_app():
    settings = load_settings({})
    assert (settings.host, settings.port) == ("127.0.0.1", 6001)
    assert settings.apps == (App(id="1", key="app-key", secret="app-secret", client_events=True,
                                 history_channels=("presence-chat-*",)),)  # the demo's chat rooms
    assert settings.hub == HubOptions()
    assert (settings.max_message_bytes, settings.max_body_bytes) == (65536, 1048576)
    assert settings.http_timeouts == HTTPTimeouts(idle=5.0, header=10.0, body=30.0)
    assert settings.fallback == FallbackOptions(disconnect_timeout=10, max_sessions=10000,
                                                hostname="")
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"


def test_default_secret_is_flagged_as_well_known():
    assert load_settings({}).uses_default_secret
    assert DEFAULT_APP_SECRET == "app-secret"
    assert not load_settings({"PUSH_APP_SECRET": "s3cret"}).uses_default_secret


def test_every_push_variable_overrides_its_default():
    settings = load_settings({
        "PUSH_HOST": "0.0.0.0",
        "PUSH_PORT": "7001",
        "PUSH_APP_ID": "123",
        "PUSH_APP_KEY": "my-key",
        "PUSH_APP_SECRET": "my-secret",
        "PUSH_APP_CLIENT_EVENTS": "false",
        "PUSH_ACTIVITY_TIMEOUT": "60",
        "PUSH_PONG_TIMEOUT": "2.5",
        "PUSH_MAX_CONNECTIONS": "500",
        "PUSH_MAX_INBOUND_RATE": "20",
        "PUSH_MAX_MESSAGE_BYTES": "4096",
        "PUSH_MAX_BODY_BYTES": "2048",
        "PUSH_HTTP_IDLE_TIMEOUT": "2",
        "PUSH_HTTP_HEADER_TIMEOUT": "3.5",
        "PUSH_HTTP_BODY_TIMEOUT": "60",
        "PUSH_LOG_LEVEL": "debug",
        "PUSH_LOG_FORMAT": "JSON",
        "PUSH_MAX_OUTBOUND_DELAY": "2.5",
        "PUSH_HTTP_FALLBACK_DISCONNECT_TIMEOUT": "4",
        "PUSH_HTTP_FALLBACK_MAX_SESSIONS": "50",
        "PUSH_HTTP_FALLBACK_MAX_SESSIONS_PER_IP": "5",
        "PUSH_HTTP_FALLBACK_HOSTNAME": "node3.example.com",
    })
    assert settings == Settings(
        host="0.0.0.0", port=7001,
        apps=(App(id="123", key="my-key", secret="my-secret", client_events=False),),
        hub=HubOptions(activity_timeout=60, pong_timeout=2.5, max_connections=500,
                       max_inbound_rate=20, max_inbound_burst=40, max_outbound_delay=2.5),
        max_message_bytes=4096, max_body_bytes=2048,
        http_timeouts=HTTPTimeouts(idle=2, header=3.5, body=60),
        fallback=FallbackOptions(disconnect_timeout=4, max_sessions=50, max_sessions_per_ip=5,
                                 hostname="node3.example.com"), log_level="DEBUG",
        log_format="json")


@pytest.mark.parametrize("text, value", [("1", True), ("yes", True), ("ON", True),
                                         ("0", False), ("no", False), ("Off", False)])
def test_boolean_variables_accept_the_usual_spellings(text, value):
    assert load_settings({"PUSH_APP_CLIENT_EVENTS": text}).apps[0].client_events is value


def test_metrics_are_on_unless_push_metrics_turns_them_off():
    assert load_settings({}).metrics is True
    assert load_settings({"PUSH_METRICS": "0"}).metrics is False


def test_flags_override_the_environment():
    settings = load_settings({"PUSH_HOST": "0.0.0.0", "PUSH_PORT": "7001"}, port=7000)
    assert (settings.host, settings.port) == ("0.0.0.0", 7000)
    settings = load_settings({"PUSH_PORT": "7001"}, host="::1", port=None)
    assert (settings.host, settings.port) == ("::1", 7001)


def test_apps_file_adds_apps_with_their_own_options(tmp_path):
    path = apps_file(tmp_path, [
        {"id": "10", "key": "ten-key", "secret": "ten-secret", "max_connections": 10,
         "client_events": False, "cache_ttl": 90.5},
        {"id": "11", "key": "eleven-key", "secret": "eleven-secret", "enabled": False,
         "client_event_rate": 5, "user_authentication_timeout": 0.5},
    ])
    default, ten, eleven = load_settings({"PUSH_APPS_FILE": path}).apps
    assert default.id == "1"
    assert ten == App(id="10", key="ten-key", secret="ten-secret", max_connections=10,
                      client_events=False, cache_ttl=90.5)
    assert eleven == App(id="11", key="eleven-key", secret="eleven-secret", enabled=False,
                         client_event_rate=5, user_authentication_timeout=0.5)


def test_apps_file_alone_when_the_default_app_is_off(tmp_path):
    path = apps_file(tmp_path, [{"id": "10", "key": "ten-key", "secret": "ten-secret"}])
    settings = load_settings({"PUSH_DEFAULT_APP": "false", "PUSH_APPS_FILE": path})
    assert [app.id for app in settings.apps] == ["10"]
    assert not settings.uses_default_secret


# -- refused, naming the setting ------------------------------------------------------------

def test_non_numeric_app_id_is_refused():
    refused({"PUSH_APP_ID": "abc"}, "PUSH_APP_*", "'abc'")


@pytest.mark.parametrize("port", ["http", "1.5", ""])
def test_non_numeric_port_is_refused(port):
    refused({"PUSH_PORT": port}, "PUSH_PORT")


def test_port_out_of_range_is_refused():
    refused({"PUSH_PORT": "70000"}, "port", "70000")


@pytest.mark.parametrize("name", ["PUSH_PONG_TIMEOUT", "PUSH_MAX_OUTBOUND_DELAY"])
@pytest.mark.parametrize("value", ["-1", "0", "soon", "nan", "inf"])
def test_timeout_that_is_not_a_positive_number_is_refused(name, value):
    refused({name: value}, name)


@pytest.mark.parametrize("name", ["PUSH_HTTP_IDLE_TIMEOUT", "PUSH_HTTP_HEADER_TIMEOUT",
                                  "PUSH_HTTP_BODY_TIMEOUT",
                                  "PUSH_HTTP_FALLBACK_DISCONNECT_TIMEOUT"])
@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf"])
def test_http_timeout_that_is_not_a_positive_number_is_refused(name, value):
    refused({name: value}, name)


def test_negative_max_connections_is_refused():
    refused({"PUSH_MAX_CONNECTIONS": "-5"}, "PUSH_MAX_CONNECTIONS")


def test_bad_boolean_is_refused():
    refused({"PUSH_APP_CLIENT_EVENTS": "maybe"}, "PUSH_APP_CLIENT_EVENTS", "maybe")


def test_unknown_log_level_is_refused():
    refused({"PUSH_LOG_LEVEL": "chatty"}, "PUSH_LOG_LEVEL")


def test_unknown_log_format_is_refused():
    refused({"PUSH_LOG_FORMAT": "xml"}, "PUSH_LOG_FORMAT")


def test_empty_app_key_is_refused():
    refused({"PUSH_APP_KEY": "  "}, "PUSH_APP_KEY")


def test_unreadable_apps_file_is_refused(tmp_path):
    refused({"PUSH_APPS_FILE": str(tmp_path / "missing.json")}, "PUSH_APPS_FILE", "cannot be read")


def test_apps_file_with_invalid_json_is_refused(tmp_path):
    refused({"PUSH_APPS_FILE": apps_file(tmp_path, "[{not json")}, "PUSH_APPS_FILE", "JSON")


def test_apps_file_that_is_not_a_list_is_refused(tmp_path):
    path = apps_file(tmp_path, {"id": "10", "key": "ten-key", "secret": "ten-secret"})
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE", "list")


def test_unknown_option_in_a_file_app_is_refused(tmp_path):
    path = apps_file(tmp_path, [{"id": "10", "key": "k", "secret": "s", "max_conections": 5}])
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #1", "max_conections")


@pytest.mark.parametrize("option, value", [
    ("max_connections", "ten"),
    ("max_connections", -1),
    ("max_connections", 1.5),
    ("max_connections", True),
    ("client_events", "yes"),
    ("cache_ttl", "forever"),
    ("cache_ttl", -1),
])
def test_wrong_option_type_in_a_file_app_is_refused(tmp_path, option, value):
    path = apps_file(tmp_path, [{"id": "10", "key": "k", "secret": "s", option: value}])
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #1", option)


@pytest.mark.parametrize("entry", [
    {"key": "k", "secret": "s"},
    {"id": 10, "key": "k", "secret": "s"},
    {"id": "ten", "key": "k", "secret": "s"},
    {"id": "10", "key": "k/1", "secret": "s"},
    {"id": "10", "key": "k", "secret": ""},
])
def test_file_app_without_valid_credentials_is_refused(tmp_path, entry):
    refused({"PUSH_APPS_FILE": apps_file(tmp_path, [entry])}, "PUSH_APPS_FILE app #1")


def test_duplicate_app_id_between_default_app_and_file_is_refused(tmp_path):
    path = apps_file(tmp_path, [{"id": "1", "key": "other-key", "secret": "s"}])
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #1", "PUSH_APP_*", "id '1'")


def test_duplicate_app_key_within_the_file_is_refused(tmp_path):
    path = apps_file(tmp_path, [{"id": "10", "key": "same", "secret": "s"},
                                {"id": "11", "key": "same", "secret": "s"}])
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #2", "app #1", "key 'same'")


def test_no_default_app_and_no_file_is_refused():
    refused({"PUSH_DEFAULT_APP": "false"}, "PUSH_DEFAULT_APP", "PUSH_APPS_FILE")


# -- the server's command line ---------------------------------------------------------------

def test_server_exits_2_naming_an_invalid_app_id():
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PUSH_")}
    environ.update(PUSH_APP_ID="abc", PUSH_PORT="0")
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "PUSH_APP_*" in result.stderr and "'abc'" in result.stderr


def test_app_key_with_a_colon_is_refused_because_auth_tokens_split_on_it():
    with pytest.raises(SettingsError, match="PUSH_APP_.*':'"):
        load_settings({"PUSH_APP_KEY": "a:b"})


# -- history ----------------------------------------------------------------------------

def test_default_app_history_comes_from_push_app_history_variables():
    app = load_settings({"PUSH_APP_HISTORY_CHANNELS": " presence-chat-* , orders-*,",
                         "PUSH_APP_HISTORY_SIZE": "500", "PUSH_APP_HISTORY_TTL": "90.5"}).apps[0]
    assert app.history_channels == ("presence-chat-*", "orders-*")
    retention = app.history_retention("presence-chat-42")
    assert (retention.max_count, retention.max_age) == (500, 90.5)
    assert app.history_retention("presence-other") is None
    assert load_settings({"PUSH_DEMO": "false"}).apps[0].history_retention("presence-chat-42") is None


def test_apps_file_sets_history_per_app(tmp_path):
    path = apps_file(tmp_path, [{"id": "10", "key": "k", "secret": "s",
                                 "history_channels": ["*"], "history_size": 3, "history_ttl": 60}])
    app = load_settings({"PUSH_APPS_FILE": path, "PUSH_DEFAULT_APP": "false"}).apps[0]
    assert app.history_retention("anything").max_count == 3


@pytest.mark.parametrize("option, value", [
    ("history_channels", "history-*"), ("history_channels", ["ok-*", ""]),
    ("history_channels", [3]), ("history_size", 0), ("history_ttl", 0), ("history_size", 1.5),
])
def test_invalid_history_options_in_a_file_app_are_refused(tmp_path, option, value):
    path = apps_file(tmp_path, [{"id": "10", "key": "k", "secret": "s", option: value}])
    refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #1", option)


@pytest.mark.parametrize("name, value", [("PUSH_APP_HISTORY_SIZE", "0"),
                                         ("PUSH_APP_HISTORY_TTL", "-1")])
def test_invalid_history_variables_are_refused(name, value):
    refused({name: value}, name)


def test_admin_password_turns_the_console_on_and_must_be_long_enough():
    assert load_settings({}).admin_password is None
    assert load_settings({"PUSH_ADMIN_PASSWORD": ""}).admin_password is None  # off, not open
    assert load_settings({"PUSH_ADMIN_PASSWORD": "twelve chars"}).admin_password == "twelve chars"
    refused({"PUSH_ADMIN_PASSWORD": "short"}, "PUSH_ADMIN_PASSWORD", "12")
    assert "twelve chars" not in repr(load_settings({"PUSH_ADMIN_PASSWORD": "twelve chars"}))


# -- allowed origins ----------------------------------------------------------------------

def test_default_app_allows_every_origin_and_connections_without_one():
    app = load_settings({}).apps[0]
    assert (app.allowed_origins, app.allow_missing_origin) == (("*",), True)
    assert app.origin_refusal("https://anywhere.example") is None
    assert app.origin_refusal(None) is None


def test_default_app_origins_come_from_push_app_allowed_origins():
    app = load_settings({
        "PUSH_APP_ALLOWED_ORIGINS": " https://app.example.com , https://*.example.org,",
        "PUSH_APP_ALLOW_MISSING_ORIGIN": "false"}).apps[0]
    assert app.allowed_origins == ("https://app.example.com", "https://*.example.org")
    assert app.origin_refusal("https://a.example.org") is None
    assert app.origin_refusal("https://evil.example").code == 4009
    assert app.origin_refusal(None).reason == "origin"


def test_apps_file_sets_origins_per_app(tmp_path):
    path = apps_file(tmp_path, [
        {"id": "10", "key": "k10", "secret": "s", "allowed_origins": ["https://ten.example"]},
        {"id": "11", "key": "k11", "secret": "s", "allowed_origins": [],
         "allow_missing_origin": False}])
    ten, eleven = load_settings({"PUSH_APPS_FILE": path, "PUSH_DEFAULT_APP": "false"}).apps
    assert ten.origin_refusal("https://ten.example") is None and ten.origin_refusal(None) is None
    assert eleven.origin_refusal("https://ten.example") is not None  # [] lists no origin
    assert eleven.origin_refusal(None) is not None


@pytest.mark.parametrize("value", ["https://app.example.com/", "app.example.com",
                                   "https://*.*.example.com", "https://app.example.com:99999",
                                   "*,https://app.example.com"])
def test_malformed_push_app_allowed_origins_is_refused_naming_it(value):
    refused({"PUSH_APP_ALLOWED_ORIGINS": value}, "PUSH_APP_ALLOWED_ORIGINS")


@pytest.mark.parametrize("option, value", [
    ("allowed_origins", "https://app.example.com"), ("allowed_origins", [3]),
    ("allowed_origins", ["https://app.example.com/path"]), ("allowed_origins", ["*.example.com"]),
    ("allowed_origins", ["https://user@app.example.com"]), ("allow_missing_origin", "no"),
])
def test_malformed_origins_in_a_file_app_are_refused(tmp_path, option, value):
    path = apps_file(tmp_path, [{"id": "10", "key": "k", "secret": "s", option: value}])
    message = refused({"PUSH_APPS_FILE": path}, "PUSH_APPS_FILE app #1", option)
    if isinstance(value, list) and isinstance(value[0], str):
        assert repr(value[0]) in message  # the entry at fault
