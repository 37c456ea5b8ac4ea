"""The unit tests' Django project: the seed's recommended settings, pointed at the agent the
tests start (``conftest.py``) in a network namespace of their own, where it listens on the
default ``TRACKING_AGENT_URL``."""

from pathlib import Path

HOOK_TOKEN = "pytest-hook-token-0123456789"
ADMIN_TOKEN = "pytest-admin-token-0123456789"

SECRET_KEY = "the unit tests' secret key, not a secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "tracking",
]
MIDDLEWARE = [
    "tracking.middleware.BannedIPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tracking.middleware.VisitorTrackingMiddleware",
    "tracking.middleware.VisitorCleanUpMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [Path(__file__).parent / "templates"],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
LOGIN_URL = "/login/"

TRACKING_HOOK_TOKEN = HOOK_TOKEN
TRACKING_ADMIN_TOKEN = ADMIN_TOKEN
TRACKING_BATCH_INTERVAL = 0.02
NO_TRACKING_PREFIXES = ["/private/"]
# django-user-tracking's own, accepted as they were.
TRACKING_TIMEOUT = 10
TRACKING_CLEANUP_TIMEOUT = 24
