"""A task on a backend whose database does not answer: importing this module builds the
backend and validates the task, which must not touch any database."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task


@task(backend="nowhere")
def unreachable():
    return None
