"""A real Django task outside the installed apps: a row naming it must never import it."""

from djapp.recording import record

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task

record("imported", module=__name__)


@task(queue_name="unknown")
def sneaky(tag):
    record("ran", tag=tag)
