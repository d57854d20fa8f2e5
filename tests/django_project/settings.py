"""Settings of the test project; the uplink, the secret and the store come from the
``ILP_RECEIVER_*`` environment (server tests) or from ``override_settings`` (in process)."""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["ilp_receiver_django"]
MIDDLEWARE = ["ilp_receiver_django.middleware.IlpReceiverMiddleware"]
ROOT_URLCONF = "tests.django_project.urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
ILP_RECEIVER: dict[str, Any] = {
    "NAME": "Django test shop",
    "PAID": {"/listed": 10, "/both": 10, "/premium/*": 25},
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ilp_receiver": {"handlers": ["console"], "level": "INFO"}},
}

# tests/test_django_servers.py: each process dials its own account, named after its pid,
# so the connector shows which processes started a receiver
if _per_pid := os.environ.get("TEST_BTP_PER_PID"):
    ILP_RECEIVER["UPLINK"] = lambda: _per_pid.format(pid=os.getpid())
