"""Active-visitor counts for the template tags, from ``GET /v1/active``, each answer reused for
``TRACKING_ACTIVE_CACHE_SECONDS`` in this process so that a busy page asks once a second or
so. When the agent cannot answer, the counts are zeros (and a log line says why, once per
outage): a page that shows how many people read it should not fail because of it."""

from __future__ import annotations

import logging
import threading
import time

from .agent import Agent, AgentRefused, AgentUnavailable

log = logging.getLogger("tracking")

ZERO = {"visitors": 0, "registered": 0, "guests": 0}
#: Paths remembered at most.
MAX_PATHS = 1000


class ActiveCounts:
    def __init__(self, agent: Agent, token: str, cache_seconds: float):
        self.agent = agent
        self.token = token
        self.cache_seconds = cache_seconds
        self._cache: dict[str | None, tuple[dict, float]] = {}
        self._lock = threading.Lock()
        self._away = False

    def counts(self, path: str | None = None) -> dict:
        """``{"visitors", "registered", "guests"}`` on the site, or on ``path``."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[1] > now:
                return hit[0]
        try:
            answer = self.agent.active(path, self.token)
            counts = {k: int(answer.get(k, 0)) for k in ZERO}
        except (AgentUnavailable, AgentRefused, AttributeError, TypeError, ValueError) as error:
            if not self._away:
                self._away = True
                log.warning("tracking: cannot read active visitors from the agent (%s); the "
                            "template tags show 0 meanwhile", error)
            counts = dict(ZERO)
        else:
            if self._away:
                self._away = False
                log.warning("tracking: the agent at %s answers active counts again",
                            self.agent.describe())
        with self._lock:
            if len(self._cache) >= MAX_PATHS:
                self._cache.clear()
            self._cache[path] = (counts, time.monotonic() + self.cache_seconds)
        return counts
