"""The site's one client of the push server: the official ``pusher`` SDK, from settings.PUSHER.

What used to be a channel layer call is a call on :func:`pusher_client`:
``trigger`` publishes to a channel, ``send_to_user`` reaches every connection of a
signed-in user, ``authenticate`` and ``authenticate_user`` sign what pusher-js asks for.
"""

from __future__ import annotations

import functools

import pusher
from django.conf import settings

#: Seconds a publish may take before the view gives up on the push server.
TIMEOUT = 5


@functools.cache
def pusher_client() -> pusher.Pusher:
    """One SDK client for the process (it keeps its HTTP connections to the server)."""
    config = settings.PUSHER
    return pusher.Pusher(app_id=config["APP_ID"], key=config["KEY"], secret=config["SECRET"],
                         host=config["HOST"], port=config["PORT"], ssl=config["SSL"],
                         timeout=TIMEOUT)
