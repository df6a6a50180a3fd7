"""The chat's views: the room page, publishing a message, and the two endpoints pusher-js asks.

Who may join what is decided here, with Django's own login (``request.user``), as a
Channels consumer did in ``connect()``. The push server only checks the signatures.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable

import pusher.errors
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.middleware.csrf import get_token
from django.views.decorators.http import require_GET, require_POST

from .push import pusher_client

log = logging.getLogger(__name__)

ROOM_PREFIX = "presence-room-"
ROOM_NAME = re.compile(r"[a-z0-9-]{1,64}")
#: The longest message a user may post (the push server's own limit is 10 KB per event).
MAX_TEXT = 1000
MENTION = re.compile(r"@([\w.@+-]{1,150})")
#: At most this many users are notified of one message.
MAX_MENTIONS = 10


def room_channel(room: str) -> str:
    """The presence channel of a room: its members are the people on the page."""
    return ROOM_PREFIX + room


def display_name(user: Any) -> str:
    return user.get_full_name() or user.get_username()


def may_join(user: Any, channel: str) -> bool:
    """Any logged-in user may join a room; ``private-user-{pk}`` is its owner's alone."""
    if channel.startswith(ROOM_PREFIX):
        return ROOM_NAME.fullmatch(channel[len(ROOM_PREFIX):]) is not None
    return channel == f"private-user-{user.pk}"


def login_required_403(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``login_required`` for what pusher-js and fetch call: 403, not a redirect to a form."""
    @functools.wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "log in first"}, status=403)
        return view(request, *args, **kwargs)
    return checked


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("room", room="lobby")


@require_GET
@login_required
def room(request: HttpRequest, room: str) -> HttpResponse:
    """The room page; pusher-js gets the push server's address and the CSRF token from it."""
    push = settings.PUSHER
    config = {
        "key": push["KEY"], "wsHost": push["WS_HOST"], "wsPort": push["WS_PORT"],
        "forceTLS": push["WS_TLS"], "channel": room_channel(room),
        "csrfToken": get_token(request), "channelAuthEndpoint": reverse("channel-auth"),
        "userAuthEndpoint": reverse("user-auth"),
    }
    return render(request, "chat/room.html", {"room": room, "config": config})


@require_POST
@login_required_403
def post_message(request: HttpRequest, room: str) -> HttpResponse:
    """Publish a message to the room (everyone, the sender too) and notify who it mentions."""
    text = request.POST.get("text", "").strip()
    if not text or len(text) > MAX_TEXT:
        return JsonResponse({"error": f"a message has 1 to {MAX_TEXT} characters"}, status=400)
    user = request.user
    sender = {"user_id": str(user.pk), "name": display_name(user)}
    try:
        pusher_client().trigger(room_channel(room), "message", {**sender, "text": text})
        for mentioned in _mentioned(text, user):
            pusher_client().send_to_user(str(mentioned.pk), "mention",
                                         {**sender, "room": room, "text": text})
    except (pusher.errors.PusherError, requests.RequestException) as error:
        log.warning("push server refused or unreachable: %s", error)
        return JsonResponse({"error": "the push server is unavailable"}, status=502)
    return JsonResponse({"sent": True})


def _mentioned(text: str, author: Any) -> list[Any]:
    """The other users named as ``@username`` in ``text``."""
    names = set(MENTION.findall(text))
    users = get_user_model().objects.filter(username__in=names).exclude(pk=author.pk)
    return list(users[:MAX_MENTIONS])


@require_POST
@login_required_403
def channel_auth(request: HttpRequest) -> HttpResponse:
    """pusher-js's channel authorization: private channels get ``auth``, presence
    channels ``auth`` and ``channel_data`` naming the Django user."""
    channel = request.POST.get("channel_name", "")
    socket_id = request.POST.get("socket_id", "")
    if not may_join(request.user, channel):
        return JsonResponse({"error": f"you may not join {channel!r}"}, status=403)
    member = None
    if channel.startswith("presence-"):
        member = {"user_id": str(request.user.pk),
                  "user_info": {"name": display_name(request.user)}}
    try:
        return JsonResponse(pusher_client().authenticate(channel, socket_id, member))
    except ValueError as error:  # the SDK names what is wrong: a bad socket id, say
        return JsonResponse({"error": str(error)}, status=400)


@require_POST
@login_required_403
def user_auth(request: HttpRequest) -> HttpResponse:
    """pusher-js's user sign-in (``pusher.signin()``): the connection becomes the user's,
    so ``send_to_user`` reaches it."""
    user = {"id": str(request.user.pk), "user_info": {"name": display_name(request.user)}}
    try:
        return JsonResponse(pusher_client().authenticate_user(
            request.POST.get("socket_id", ""), user))
    except ValueError as error:
        return JsonResponse({"error": str(error)}, status=400)
