"""The push engine: Pusher protocol 7 semantics with no Tornado request objects.

``handlers`` turn network input into calls on :class:`pubsub.hub.Hub` and
:class:`pubsub.session.Session`; nothing in this package imports ``handlers``.
"""
