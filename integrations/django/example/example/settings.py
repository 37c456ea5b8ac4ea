"""A site configured as django-user-tracking's documentation says, for the end-to-end test and
the benchmark (tests/tests/django.rs, tests/src/bench/django.rs), which start it under gunicorn
in front of a real agent. What differs between their runs comes from the environment:

- ``EXAMPLE_DATABASE``: the SQLite file (made by ``manage.py migrate``).
- ``EXAMPLE_MIDDLEWARE``: ``seed`` (default), the seed's three middleware around Django's, or
  ``none``, Django's alone (the benchmark's baseline).
- ``TRACKING_AGENT_URL``, ``TRACKING_HOOK_TOKEN_FILE``, ``TRACKING_ADMIN_TOKEN_FILE``,
  ``TRACKING_TRUSTED_PROXIES`` (comma-separated), ``TRACKING_BAN_CACHE_SECONDS``,
  ``TRACKING_ACTIVE_CACHE_SECONDS``: the package's settings.
"""

import os
from pathlib import Path

env = os.environ

SECRET_KEY = "the example site's key, not a secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": env.get("EXAMPLE_DATABASE", str(Path(__file__).parent / "db.sqlite3"))}}

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "tracking",
    "example",
]

DJANGO_MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
if env.get("EXAMPLE_MIDDLEWARE", "seed") == "none":
    MIDDLEWARE = DJANGO_MIDDLEWARE
else:
    MIDDLEWARE = [
        "tracking.middleware.BannedIPMiddleware",
        *DJANGO_MIDDLEWARE,
        "tracking.middleware.VisitorTrackingMiddleware",
        "tracking.middleware.VisitorCleanUpMiddleware",
    ]

TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
LOGIN_URL = "/login/"

# The seed's settings, as its users have them.
NO_TRACKING_PREFIXES = ["/private/"]
TRACKING_TIMEOUT = 10
TRACKING_CLEANUP_TIMEOUT = 24
DEFAULT_TRACKING_TEMPLATE = "example/map.html"

# The package's own.
for name in ("TRACKING_AGENT_URL", "TRACKING_HOOK_TOKEN_FILE", "TRACKING_ADMIN_TOKEN_FILE"):
    if name in env:
        globals()[name] = env[name]
TRACKING_TRUSTED_PROXIES = [p for p in env.get("TRACKING_TRUSTED_PROXIES", "").split(",") if p]
for name in ("TRACKING_BAN_CACHE_SECONDS", "TRACKING_ACTIVE_CACHE_SECONDS"):
    if name in env:
        globals()[name] = float(env[name])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {"tracking": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
