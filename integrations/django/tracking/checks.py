"""Django system checks (``manage.py check``, ``runserver``, ``migrate``): bad settings, a
middleware order that cannot work, and the django-user-tracking settings that now belong to
the agent."""

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf

BANNED = "tracking.middleware.BannedIPMiddleware"
TRACKING = "tracking.middleware.VisitorTrackingMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
SESSION = "django.contrib.sessions.middleware.SessionMiddleware"


@checks.register()
def tracking_settings(app_configs, **kwargs):
    found = []
    try:
        loaded = conf.load(settings)
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="tracking.E001")]
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    uses_hook = BANNED in middleware or TRACKING in middleware
    if uses_hook and loaded.hook_token is None:
        found.append(checks.Error(
            "the tracking middleware needs the agent's hook token",
            hint="set TRACKING_HOOK_TOKEN, or TRACKING_HOOK_TOKEN_FILE to the agent's "
                 "`hook-token` file (next to its database, /var/lib/tracking/ by default)",
            id="tracking.E002"))
    if BANNED in middleware and middleware.index(BANNED) != 0:
        found.append(checks.Warning(
            f"{BANNED} is not first in MIDDLEWARE",
            hint="put it first, so that a banned client goes through no other middleware",
            id="tracking.W001"))
    if TRACKING in middleware:
        for above in (SESSION, AUTH):
            if above in middleware and middleware.index(above) > middleware.index(TRACKING):
                found.append(checks.Warning(
                    f"{TRACKING} comes before {above}",
                    hint=f"put it below {above}, so that the visit has the session and the user",
                    id="tracking.W002"))
    for name, where in conf.SEED_SETTINGS.items():
        if hasattr(settings, name):
            found.append(checks.Info(f"{name} is django-user-tracking's; it is now {where}",
                                     id="tracking.I001"))
    return found
