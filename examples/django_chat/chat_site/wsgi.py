"""The WSGI application, for gunicorn or uWSGI: ``gunicorn chat_site.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_site.settings")
application = get_wsgi_application()
