"""Webhook configuration: per-app URLs and event types, the default app, delivery options."""

from __future__ import annotations

import pytest

from tornado_push.pubsub.apps import WEBHOOK_EVENT_TYPES, WebhookTarget
from tornado_push.pubsub.webhooks import WebhookOptions
from tornado_push.embed import make_hub
from tornado_push.settings import load_settings
from test_settings import apps_file, refused


def file_app(tmp_path, webhooks) -> dict[str, str]:
    """The environment for one file app (and no default app) with these ``webhooks``."""
    entry = {"id": "10", "key": "ten-key", "secret": "ten-secret", "webhooks": webhooks}
    return {"PUSH_DEFAULT_APP": "false", "PUSH_APPS_FILE": apps_file(tmp_path, [entry])}


def test_default_app_has_no_webhooks_and_no_counts_unless_asked():
    (app,) = load_settings({}).apps
    assert app.webhooks == () and not app.subscription_count_events
    assert load_settings({}).webhooks == WebhookOptions()


def test_default_app_webhooks_are_comma_separated_urls_that_get_every_type():
    (app,) = load_settings({"PUSH_APP_WEBHOOKS": "http://a.example/hook, https://b.example:8443/x",
                            "PUSH_APP_SUBSCRIPTION_COUNT": "true"}).apps
    assert app.webhooks == (WebhookTarget("http://a.example/hook"),
                            WebhookTarget("https://b.example:8443/x"))
    assert app.webhooks[0].event_types == WEBHOOK_EVENT_TYPES
    assert app.subscription_count_events


def test_file_app_webhooks_take_urls_and_objects_naming_event_types(tmp_path):
    (app,) = load_settings(file_app(tmp_path, [
        "https://hooks.example/all",
        {"url": "http://127.0.0.1:9000/presence", "event_types": ["member_added", "member_removed"]},
        {"url": "http://127.0.0.1:9000/orders", "channel_name_starts_with": "private-",
         "channel_name_ends_with": "-orders"},
    ])).apps
    assert app.webhooks == (
        WebhookTarget("https://hooks.example/all"),
        WebhookTarget("http://127.0.0.1:9000/presence", frozenset({"member_added", "member_removed"})),
        WebhookTarget("http://127.0.0.1:9000/orders", channel_name_starts_with="private-",
                      channel_name_ends_with="-orders"),
    )


def test_delivery_variables_set_the_webhook_options():
    settings = load_settings({"PUSH_WEBHOOK_BATCH_SECONDS": "0.5", "PUSH_WEBHOOK_LEAVE_DELAY": "0",
                              "PUSH_WEBHOOK_RETRY_FOR": "60", "PUSH_WEBHOOK_QUEUE_SIZE": "50"})
    assert settings.webhooks == WebhookOptions(batch_seconds=0.5, leave_delay=0, retry_for=60,
                                               queue_size=50)


def test_server_hub_delivers_webhooks_with_the_configured_options():
    settings = load_settings({"PUSH_WEBHOOK_RETRY_FOR": "30"})
    assert make_hub(settings).webhooks.options == settings.webhooks


@pytest.mark.parametrize("webhooks, named", [
    ("http://a.example/", "must be a list"),
    (["ftp://a.example/"], "webhooks #1: url"),
    (["http:///no-host"], "webhooks #1: url"),
    (["http://a.example/", "http://[::1/"], "webhooks #2: url"),
    ([{"url": "http://a.example/", "event_types": ["channel_ocupied"]}], "event_types"),
    ([{"url": "http://a.example/", "event_types": []}], "event_types"),
    ([{"url": "http://a.example/", "events": ["cache_miss"]}], "only channel_name_ends_with, "
                                                               "channel_name_starts_with, "
                                                               "event_types, url"),
    ([{"url": "http://a.example/", "channel_name_starts_with": ""}], "channel_name_starts_with"),
    ([{"url": "http://a.example/", "channel_name_ends_with": ["-x"]}], "channel_name_ends_with"),
    ([{"event_types": ["cache_miss"]}], "webhooks #1: url"),
    ([42], "webhooks #1"),
    (["http://a.example/", {"url": "http://a.example/"}], "listed twice"),
])
def test_invalid_file_app_webhooks_are_refused_naming_app_and_option(tmp_path, webhooks, named):
    refused(file_app(tmp_path, webhooks), "PUSH_APPS_FILE app #1", "webhooks", named)


@pytest.mark.parametrize("environ, named", [
    ({"PUSH_APP_WEBHOOKS": "http://a.example/,mailto:x@example.com"}, "PUSH_APP_WEBHOOKS #2"),
    ({"PUSH_APP_SUBSCRIPTION_COUNT": "sometimes"}, "PUSH_APP_SUBSCRIPTION_COUNT"),
    ({"PUSH_WEBHOOK_QUEUE_SIZE": "0"}, "PUSH_WEBHOOK_QUEUE_SIZE"),
    ({"PUSH_WEBHOOK_LEAVE_DELAY": "-1"}, "PUSH_WEBHOOK_LEAVE_DELAY"),
    ({"PUSH_WEBHOOK_BATCH_SECONDS": "soon"}, "PUSH_WEBHOOK_BATCH_SECONDS"),
    ({"PUSH_WEBHOOK_RETRY_FOR": "inf"}, "PUSH_WEBHOOK_RETRY_FOR"),
])
def test_invalid_webhook_variables_are_refused_naming_the_variable(environ, named):
    refused(environ, named)
