"""tornado_push: a Pusher protocol 7 push server on Tornado.

Run it with ``python server.py`` (a checkout) or ``python -m tornado_push``
(installed).
"""
