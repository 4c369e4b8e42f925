"""The test app: signal receivers that record what each process saw, one line per signal."""

from django.apps import AppConfig


class DjappConfig(AppConfig):
    name = "djapp"

    def ready(self) -> None:
        from djapp import recording

        recording.connect_signals()
