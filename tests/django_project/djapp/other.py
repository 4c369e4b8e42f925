"""A task module nothing else imports: the worker must find it through the row's path."""

try:
    from django.tasks import task
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task


@task
def double(x):
    return x * 2
