"""Whether a client is banned, asked of the agent (``GET /v1/check``) and remembered per address
for ``TRACKING_BAN_CACHE_SECONDS``, so that a client's requests cost one check per period.

When the agent cannot answer, the verdict is unknown (``None``) and the middleware fails open or
closed as configured. One failed check stands for the next second's, so that a stopped agent
does not cost every request a connection attempt; the outage is logged once, and its end too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from .agent import Agent, AgentRefused, AgentUnavailable

log = logging.getLogger("tracking")

#: Addresses remembered at most; the least recently checked go first.
MAX_ENTRIES = 10_000
#: How long a failed check stands for the next ones, in seconds.
RETRY_AFTER = 1.0


class BanChecker:
    def __init__(self, agent: Agent, token: str, cache_seconds: float, fail_closed: bool):
        self.agent = agent
        self.fail_closed = fail_closed
        self.token = token
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()
        #: Until when checks are not tried (the agent just failed one).
        self._down_until = 0.0
        self._away = False
        #: Checks that went to the agent, for the tests and the benchmark's notes.
        self.asked = 0

    def banned(self, ip: str) -> bool | None:
        """True or False, or None when the agent could not say."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(ip)
            if hit is not None and hit[1] > now:
                self._cache.move_to_end(ip)
                return hit[0]
            if now < self._down_until:
                return None
        try:
            self.asked += 1
            verdict = self.agent.banned(ip, self.token)
        except (AgentUnavailable, AgentRefused) as error:
            with self._lock:
                self._down_until = time.monotonic() + RETRY_AFTER
                first = not self._away
                self._away = True
            if first:
                log.warning("tracking: cannot check bans with the agent (%s); %s", error,
                            "refusing requests meanwhile (TRACKING_FAIL_CLOSED)"
                            if self.fail_closed else
                            "letting requests through meanwhile")
            return None
        with self._lock:
            if self._away:
                self._away = False
                log.warning("tracking: the agent at %s answers ban checks again",
                            self.agent.describe())
            if self.cache_seconds > 0:
                self._cache[ip] = (verdict, time.monotonic() + self.cache_seconds)
                self._cache.move_to_end(ip)
                while len(self._cache) > MAX_ENTRIES:
                    self._cache.popitem(last=False)
        return verdict
