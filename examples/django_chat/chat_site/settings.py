"""Settings of the chat example, read from the environment.

Django:
    DJANGO_SECRET_KEY     required unless DJANGO_DEBUG is on (then a fixed development key)
    DJANGO_DEBUG          1 or 0 (default 1: this is an example; runserver then serves
                          the static files, pusher.js among them)
    DJANGO_ALLOWED_HOSTS  comma-separated (default 127.0.0.1,localhost)
    CHAT_DATABASE         the SQLite file (default db.sqlite3 beside manage.py)
    PUSHER_JS_DIR         the folder holding pusher-js's web build, pusher.js (default
                          node_modules/pusher-js/dist/web beside manage.py: npm ci there)

The push server (what the official ``pusher`` SDK and pusher-js are pointed at):
    PUSHER_APP_ID, PUSHER_KEY, PUSHER_SECRET
                          the app (default 1, app-key, app-secret: ``python server.py``'s
                          default app)
    PUSHER_HOST, PUSHER_PORT, PUSHER_SSL
                          where Django publishes and queries (default 127.0.0.1, 6001, 0)
    PUSHER_WS_HOST, PUSHER_WS_PORT, PUSHER_WS_TLS
                          where browsers connect (default the three above), e.g.
                          push.example.com, 443, 1 behind nginx
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


DEBUG = _flag("DJANGO_DEBUG", "1")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for development)")
    SECRET_KEY = "development-only-key-never-use-it-in-production"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "chat",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "chat_site.urls"
WSGI_APPLICATION = "chat_site.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("CHAT_DATABASE", str(BASE_DIR / "db.sqlite3")),
}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATICFILES_DIRS = [("pusher-js", os.environ.get(
    "PUSHER_JS_DIR", str(BASE_DIR / "node_modules" / "pusher-js" / "dist" / "web")))]

_host = os.environ.get("PUSHER_HOST", "127.0.0.1")
_port = int(os.environ.get("PUSHER_PORT", "6001"))
_ssl = _flag("PUSHER_SSL", "0")
#: The push server: chat.push builds the SDK client from it, the page's pusher-js too.
PUSHER = {
    "APP_ID": os.environ.get("PUSHER_APP_ID", "1"),
    "KEY": os.environ.get("PUSHER_KEY", "app-key"),
    "SECRET": os.environ.get("PUSHER_SECRET", "app-secret"),
    "HOST": _host,
    "PORT": _port,
    "SSL": _ssl,
    "WS_HOST": os.environ.get("PUSHER_WS_HOST", _host),
    "WS_PORT": int(os.environ.get("PUSHER_WS_PORT", str(_port))),
    "WS_TLS": _flag("PUSHER_WS_TLS", "1" if _ssl else "0"),
}
