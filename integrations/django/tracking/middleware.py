"""The middleware of django-user-tracking, by the same names, backed by the agent.

- ``BannedIPMiddleware`` (first in ``MIDDLEWARE``): 403 for a banned client. XDP already drops
  what a banned address sends to the host; this is for the client behind a proxy or a CDN,
  whose packets come from the proxy.
- ``VisitorTrackingMiddleware`` (below ``SessionMiddleware`` and ``AuthenticationMiddleware``):
  one visit a request, queued for the background sender; the request never waits for the agent.
- ``VisitorCleanUpMiddleware``: the agent cleans up (``--cleanup-timeout``); this one takes
  itself out of the chain, so that old settings load and cost nothing.
"""

from __future__ import annotations

import logging
import re
import time

from django.contrib.auth import SESSION_KEY
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpResponse, HttpResponseForbidden
from django.utils.functional import SimpleLazyObject, empty

from . import runtime
from .address import client_address

log = logging.getLogger("tracking")

#: What the agent refuses in a text field (``char::is_control``): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: The agent's limits, in bytes of UTF-8.
_LIMITS = {"session_key": 256, "user_agent": 2048, "user": 256, "referrer": 4096, "url": 4096}
#: Where the client's address is kept on the request, once worked out.
_ADDRESS = "tracking_client_ip"


#: Client addresses by what the server and the proxies said: parsing addresses is most of
#: what working one out costs, and the same few come again and again.
_ADDRESSES: dict[tuple, str | None] = {}
_MAX_ADDRESSES = 10_000


def _client(request, settings) -> str | None:
    cached = getattr(request, _ADDRESS, None)
    if cached is not None:
        return cached
    meta = request.META
    said = (meta.get("REMOTE_ADDR"), meta.get("HTTP_X_FORWARDED_FOR") if settings.trusted_proxies
            else None, settings.trusted_proxies)
    try:
        text = _ADDRESSES[said]
    except KeyError:
        address = client_address(meta, settings.trusted_proxies)
        text = None if address is None else str(address)
        if len(_ADDRESSES) >= _MAX_ADDRESSES:
            _ADDRESSES.clear()
        _ADDRESSES[said] = text
    setattr(request, _ADDRESS, text)
    return text


def _username(request, session) -> str | None:
    """The logged-in user's name, without making Django look the user up when nobody asked for
    them yet and the session holds no user (a guest: the common case, and a lookup's cost)."""
    user = request.__dict__.get("user")
    if user is None:
        return None
    if (isinstance(user, SimpleLazyObject) and user._wrapped is empty and session is not None
            and session.get(SESSION_KEY) is None):
        return None
    if not user.is_authenticated:
        return None
    return _text(str(user.get_username()).strip(), "user")


def _header(value: str | None) -> str | None:
    """A header as its bytes were meant: WSGI hands them over decoded as Latin-1, and a user
    agent or a referrer is UTF-8 more often than not."""
    if not value or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _text(value: str | None, field: str) -> str | None:
    """``value`` without control characters and cut to the agent's limit for ``field``."""
    if not value:
        return None
    value = _CONTROL.sub("", value)
    limit = _LIMITS[field]
    if len(value) * 4 > limit:
        encoded = value.encode("utf-8")
        if len(encoded) > limit:
            value = encoded[:limit].decode("utf-8", "ignore")
    return value or None


class BannedIPMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        # Reads and checks the settings now, so that a bad one stops the site from starting.
        runtime.get().bans()

    def __call__(self, request):
        rt = runtime.get()
        ip = _client(request, rt.settings)
        if ip is not None:
            verdict = rt.bans().banned(ip)
            if verdict:
                return HttpResponseForbidden("Your address is banned from this site.\n",
                                             content_type="text/plain; charset=utf-8")
            if verdict is None and rt.settings.fail_closed:
                response = HttpResponse("The site cannot check its visitors right now; try again "
                                        "in a moment.\n", status=503,
                                        content_type="text/plain; charset=utf-8")
                response["Retry-After"] = "5"
                return response
        return self.get_response(request)


class VisitorTrackingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        runtime.get().sender()

    def __call__(self, request):
        response = self.get_response(request)
        rt = runtime.get()
        path = request.path
        prefixes = rt.settings.no_tracking_prefixes
        if prefixes and path.startswith(prefixes):
            return response
        try:
            visit = self._visit(request, response, rt.settings)
        except Exception:  # a visit is never worth a failed request
            log.exception("tracking: could not make a visit of %s", path)
            return response
        if visit is not None:
            rt.sender().submit(visit)
        return response

    def _visit(self, request, response, settings) -> tuple | None:
        ip = _client(request, settings)
        if ip is None:
            return None
        session_key = None
        session = getattr(request, "session", None)
        if session is not None:
            session_key = session.session_key
            # A session made by this request gets its key when SessionMiddleware saves it,
            # after this middleware: save it now (as SessionMiddleware would, below 500), so
            # that the first page view counts for the session and not for a stranger.
            if (session_key is None and response.status_code < 500 and session.modified
                    and not session.is_empty()):
                session.save()
                session_key = session.session_key
        username = _username(request, session)
        meta = request.META
        return (
            time.time(),
            ip,
            session_key if session_key is None or len(session_key) <= 256 else None,
            _text(_header(meta.get("HTTP_USER_AGENT")), "user_agent"),
            username,
            _text(_header(meta.get("HTTP_REFERER")), "referrer"),
            _text(request.path, "url") or "/",
        )


class VisitorCleanUpMiddleware:
    """Accepted so that django-user-tracking's settings load; the agent deletes visitor records
    idle longer than its ``--cleanup-timeout`` (``TRACKING_CLEANUP_TIMEOUT`` was 24 hours)."""

    def __init__(self, get_response):
        raise MiddlewareNotUsed("tracking: the agent cleans up visitor records itself")
