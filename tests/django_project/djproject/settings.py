"""Settings of the throwaway project: the database comes from the environment the test sets
(PGQUEUE_DJANGO_DB_* ), so every run uses its own fresh database."""

import os

import django

SECRET_KEY = "only-for-tests"
USE_TZ = True
DEBUG = False
BACKPORT = django.VERSION < (6, 0)

INSTALLED_APPS = [
    *(["django_tasks"] if BACKPORT else []),
    "pgqueue.contrib.django",
    "djapp",
]

_env = os.environ.get
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _env("PGQUEUE_DJANGO_DB_NAME", "pgqueue_django"),
        "HOST": _env("PGQUEUE_DJANGO_DB_HOST", ""),
        "PORT": _env("PGQUEUE_DJANGO_DB_PORT", ""),
        "USER": _env("PGQUEUE_DJANGO_DB_USER", ""),
        "PASSWORD": _env("PGQUEUE_DJANGO_DB_PASSWORD", ""),
    },
    # Nothing listens there: a backend on it must still build (and its tasks import).
    "nowhere": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "nowhere",
        "HOST": "127.0.0.1",
        "PORT": "1",
    },
}

BACKEND = "pgqueue.contrib.django.PgQueueBackend"
TASKS = {
    "default": {
        "BACKEND": BACKEND,
        "QUEUES": [
            "default", "errors", "context", "async", "tx", "later", "prio", "a", "b", "conc",
            "many", "signals", "unknown",
        ],
    },
    "retrying": {"BACKEND": BACKEND, "QUEUES": ["retry"], "OPTIONS": {"MAX_ATTEMPTS": 2}},
    "nowhere": {"BACKEND": BACKEND, "OPTIONS": {"DATABASE": "nowhere", "SCHEMA": "elsewhere"}},
}  # fmt: skip

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"pgqueue": {"handlers": ["console"], "level": "WARNING"}},
}
