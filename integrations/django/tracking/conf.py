"""The package's settings, read once from ``django.conf.settings`` and checked whole.

Every problem is named with its setting, and all of them are reported together in one
``ImproperlyConfigured``: a site that starts at all starts with settings that make sense.

What the agent owns is only accepted here, so that a django-user-tracking settings file loads
unchanged: ``TRACKING_TIMEOUT`` (minutes) is the agent's ``--tracking-timeout``,
``TRACKING_CLEANUP_TIMEOUT`` (hours) its ``--cleanup-timeout``, ``GEOIP_PATH`` its
``--geoip-db``; ``GOOGLE_MAPS_KEY``, ``TRACKING_USE_GEOIP`` and ``GEOIP_CACHE_TYPE`` have no
use any more; untracked user agents are the agent's rules (``tracking ua add``).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

DEFAULT_AGENT_URL = "http://127.0.0.1:8080"
DEFAULT_MAP_TEMPLATE = "tracking/visitor_map.html"

#: The agent's batch limit (``MAX_BATCH`` in its hook).
MAX_BATCH = 1000

#: Settings of django-user-tracking that the agent took over, and where they went.
SEED_SETTINGS = {
    "TRACKING_TIMEOUT": "the agent's --tracking-timeout (e.g. `--tracking-timeout 10m`)",
    "TRACKING_CLEANUP_TIMEOUT": "the agent's --cleanup-timeout (e.g. `--cleanup-timeout 24h`)",
    "GEOIP_PATH": "the agent's --geoip-db (a MaxMind DB file such as GeoLite2-City.mmdb)",
    "GEOIP_CACHE_TYPE": "nothing: the agent reads its GeoIP database into memory",
    "TRACKING_USE_GEOIP": "nothing: the map uses GeoIP when the agent has --geoip-db",
    "GOOGLE_MAPS_KEY": "nothing: the map needs no API key",
}


@dataclass(frozen=True)
class Settings:
    """What the middleware, the template tags and the pages are configured with."""

    #: Where the agent's HTTP listener is: ``http://host:port`` (``https`` for a TLS proxy).
    agent_url: str
    #: The hook token: visits, active counts and ban checks. ``None``: not configured.
    hook_token: str | None
    #: The admin token: the map and live pages read active visitors with it.
    admin_token: str | None
    #: Peers whose ``X-Forwarded-For`` is believed.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    #: How long a ban check's answer is reused for the same address, in seconds.
    ban_cache_seconds: float
    #: Refuse requests (503) when the agent cannot say whether the client is banned.
    fail_closed: bool
    #: Paths under these prefixes are never sent to the agent.
    no_tracking_prefixes: tuple[str, ...]
    #: How long the template tags reuse an answer of ``GET /v1/active``, in seconds.
    active_cache_seconds: float
    #: Visits a process holds for the agent at most; more are dropped, with a log line.
    queue_size: int
    #: Visits in one ``POST /v1/visits/batch`` at most.
    batch_size: int
    #: How long the sender waits for more visits before it posts a batch, in seconds.
    batch_interval: float
    #: Connect and read timeout of a call to the agent in a request, in seconds.
    agent_timeout: float
    #: Connect and read timeout of the sender's batches, in seconds. Longer than a request's:
    #: nobody waits for it, and a batch the agent took but did not answer in time is sent
    #: again, and counted twice.
    send_timeout: float
    #: How long the process waits at exit for queued visits to be sent, in seconds.
    flush_timeout: float
    #: The map page's template (django-user-tracking's ``DEFAULT_TRACKING_TEMPLATE``).
    map_template: str

    @property
    def agent_host(self) -> str:
        return urlsplit(self.agent_url).hostname or ""

    @property
    def agent_port(self) -> int:
        parts = urlsplit(self.agent_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def agent_tls(self) -> bool:
        return urlsplit(self.agent_url).scheme == "https"


class _Reader:
    """Reads settings and collects every problem, each naming its setting."""

    def __init__(self, source: Any):
        self.source = source
        self.problems: list[str] = []

    def raw(self, name: str, default: Any = None) -> Any:
        return getattr(self.source, name, default)

    def problem(self, name: str, text: str) -> None:
        self.problems.append(f"{name}: {text}")

    def number(self, name: str, default: float, *, minimum: float = 0.0,
               maximum: float = math.inf) -> float:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(name, f"must be a number of seconds, not {value!r}")
            return default
        if not (minimum <= value <= maximum) or math.isnan(value):
            upper = "" if maximum == math.inf else f" and at most {maximum:g}"
            self.problem(name, f"must be at least {minimum:g}{upper}, not {value!r}")
            return default
        return float(value)

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, f"must be a whole number, not {value!r}")
            return default
        if not minimum <= value <= maximum:
            self.problem(name, f"must be between {minimum} and {maximum}, not {value}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            self.problem(name, f"must be True or False, not {value!r}")
            return default
        return value

    def token(self, name: str) -> str | None:
        """``<name>`` itself, or the first line of the file ``<name>_FILE``."""
        direct, path = self.raw(name), self.raw(f"{name}_FILE")
        if direct is not None and path is not None:
            self.problem(name, f"set either {name} or {name}_FILE, not both")
            return None
        if direct is not None:
            if not isinstance(direct, str) or not direct.strip():
                self.problem(name, "must be the token, a non-empty string")
                return None
            return direct.strip()
        if path is None:
            return None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, TypeError, ValueError) as error:
            self.problem(f"{name}_FILE", f"cannot read the token from {path!r}: {error}")
            return None
        token = text.strip()
        if not token:
            self.problem(f"{name}_FILE", f"{path} is empty")
            return None
        return token

    def agent_url(self) -> str:
        name = "TRACKING_AGENT_URL"
        value = self.raw(name, DEFAULT_AGENT_URL)
        if not isinstance(value, str):
            self.problem(name, f"must be a URL like {DEFAULT_AGENT_URL}, not {value!r}")
            return DEFAULT_AGENT_URL
        try:
            parts = urlsplit(value.strip())
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as error:
            self.problem(name, f"{value!r} is not a URL: {error}")
            return DEFAULT_AGENT_URL
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(name, f"must be http://host:port or https://host:port, not {value!r}")
            return DEFAULT_AGENT_URL
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            self.problem(name, f"must have no path or query (the agent's API is at /v1/), not {value!r}")
            return DEFAULT_AGENT_URL
        return f"{parts.scheme}://{parts.netloc}"

    def networks(self, name: str) -> tuple:
        value = self.raw(name, ())
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            self.problem(name, f"must be a list of addresses or networks, not {value!r}")
            return ()
        found = []
        for item in value:
            try:
                found.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                self.problem(name, f"{item!r} is not an IP address or network")
        return tuple(found)

    def prefixes(self, name: str) -> tuple[str, ...]:
        value = self.raw(name, ())
        if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
            self.problem(name, f"must be a list of path prefixes like ['/admin/'], not {value!r}")
            return ()
        found = []
        for item in value:
            if not isinstance(item, str) or not item.startswith("/"):
                self.problem(name, f"{item!r} is not a path prefix starting with /")
            else:
                found.append(item)
        return tuple(found)

    def template(self, name: str) -> str:
        value = self.raw(name, DEFAULT_MAP_TEMPLATE)
        if not isinstance(value, str) or not value.strip():
            self.problem(name, f"must be a template name, not {value!r}")
            return DEFAULT_MAP_TEMPLATE
        return value

    def seed(self) -> None:
        """The seed's settings the agent owns: accepted when they have the seed's type."""
        for name in ("TRACKING_TIMEOUT", "TRACKING_CLEANUP_TIMEOUT"):
            value = self.raw(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value <= 0):
                self.problem(name, f"must be a positive number, not {value!r} (it is now "
                                   f"{SEED_SETTINGS[name]})")


def load(source: Any) -> Settings:
    """The settings from ``source`` (``django.conf.settings``), or ``ImproperlyConfigured``
    listing every problem."""
    r = _Reader(source)
    settings = Settings(
        agent_url=r.agent_url(),
        hook_token=r.token("TRACKING_HOOK_TOKEN"),
        admin_token=r.token("TRACKING_ADMIN_TOKEN"),
        trusted_proxies=r.networks("TRACKING_TRUSTED_PROXIES"),
        ban_cache_seconds=r.number("TRACKING_BAN_CACHE_SECONDS", 5.0, maximum=3600),
        fail_closed=r.boolean("TRACKING_FAIL_CLOSED", False),
        no_tracking_prefixes=r.prefixes("NO_TRACKING_PREFIXES"),
        active_cache_seconds=r.number("TRACKING_ACTIVE_CACHE_SECONDS", 1.0, maximum=3600),
        queue_size=r.integer("TRACKING_QUEUE_SIZE", 10_000, minimum=1, maximum=10_000_000),
        batch_size=r.integer("TRACKING_BATCH_SIZE", 500, minimum=1, maximum=MAX_BATCH),
        batch_interval=r.number("TRACKING_BATCH_INTERVAL", 0.1, maximum=60),
        agent_timeout=r.number("TRACKING_AGENT_TIMEOUT", 1.0, minimum=0.001, maximum=60),
        send_timeout=r.number("TRACKING_SEND_TIMEOUT", 30.0, minimum=0.001, maximum=600),
        flush_timeout=r.number("TRACKING_FLUSH_TIMEOUT", 2.0, maximum=600),
        map_template=r.template("DEFAULT_TRACKING_TEMPLATE"),
    )
    r.seed()
    if r.problems:
        raise ImproperlyConfigured(
            "tracking: the settings have problems:\n  " + "\n  ".join(r.problems)
        )
    return settings


def need_hook_token(settings: Settings, what: str) -> str:
    """The hook token, or a clear error saying that ``what`` needs it."""
    if settings.hook_token is None:
        raise ImproperlyConfigured(
            f"tracking: {what} needs the agent's hook token: set TRACKING_HOOK_TOKEN, or "
            "TRACKING_HOOK_TOKEN_FILE to the `hook-token` file the agent writes next to its "
            "database (/var/lib/tracking/hook-token by default)"
        )
    return settings.hook_token
