"""Django's own login and logout at /accounts/, the chat at / and /pusher/."""

from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("chat.urls")),
]
