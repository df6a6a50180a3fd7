from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    re_path(r"^rooms/(?P<room>[a-z0-9-]{1,64})/$", views.room, name="room"),
    re_path(r"^rooms/(?P<room>[a-z0-9-]{1,64})/messages$", views.post_message, name="messages"),
    path("pusher/auth", views.channel_auth, name="channel-auth"),
    path("pusher/user-auth", views.user_auth, name="user-auth"),
]
