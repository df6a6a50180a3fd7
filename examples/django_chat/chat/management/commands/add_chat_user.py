"""``python manage.py add_chat_user alice --name "Alice Liddell"``: a user who may log in."""

from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create a user of the chat, or set the password and name of an existing one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="shown to the others (default: username)")
        parser.add_argument("--password", help="asked for when not given")

    def handle(self, *args: Any, username: str, name: str, password: str | None,
               **options: Any) -> None:
        password = password or getpass.getpass(f"Password for {username}: ")
        if not password:
            raise CommandError("a password is required")
        user, created = get_user_model().objects.get_or_create(username=username)
        user.first_name = name
        user.set_password(password)
        user.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} {username}")
