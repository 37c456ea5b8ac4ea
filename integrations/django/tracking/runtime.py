"""What a process shares: the settings, the agent, the sender, the ban cache and the active
counts, built on first use. Django gives middleware, template tags and views no common object
to hang them on, so they live here, one per process, the way Django's own ``caches`` do.

After a fork (gunicorn's ``--preload``, multiprocessing) the child starts afresh: a sender
thread and kept-alive connections do not survive a fork. A change of the ``TRACKING_*``
settings (``override_settings`` in tests) starts afresh too, after flushing the old sender.
"""

from __future__ import annotations

import atexit
import os
import threading

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from . import conf
from .active import ActiveCounts
from .agent import Agent
from .bans import BanChecker
from .sender import Sender


class Runtime:
    def __init__(self, settings: conf.Settings):
        self.settings = settings
        self.agent = Agent(settings)
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._bans: BanChecker | None = None
        self._active: ActiveCounts | None = None

    def sender(self) -> Sender:
        if self._sender is None:
            token = conf.need_hook_token(self.settings, "VisitorTrackingMiddleware")
            with self._lock:
                if self._sender is None:
                    s = self.settings
                    # A connection of its own: the sender is the only thread that uses it.
                    self._sender = Sender(Agent(s, s.send_timeout), token, queue_size=s.queue_size,
                                          batch_size=s.batch_size,
                                          batch_interval=s.batch_interval,
                                          flush_timeout=s.flush_timeout)
        return self._sender

    def bans(self) -> BanChecker:
        if self._bans is None:
            token = conf.need_hook_token(self.settings, "BannedIPMiddleware")
            with self._lock:
                if self._bans is None:
                    self._bans = BanChecker(self.agent, token, self.settings.ban_cache_seconds,
                                            self.settings.fail_closed)
        return self._bans

    def active(self) -> ActiveCounts:
        if self._active is None:
            token = conf.need_hook_token(self.settings, "the tracking_tags template tags")
            with self._lock:
                if self._active is None:
                    self._active = ActiveCounts(self.agent, token,
                                                self.settings.active_cache_seconds)
        return self._active

    def flush(self) -> None:
        if self._sender is not None:
            self._sender.flush()


_current: Runtime | None = None
_lock = threading.Lock()


def get() -> Runtime:
    """This process's runtime, built from the settings on first use."""
    global _current
    runtime = _current
    if runtime is None:
        with _lock:
            if _current is None:
                _current = Runtime(conf.load(django_settings))
            runtime = _current
    return runtime


def reset() -> None:
    """Flushes what is queued and forgets the runtime: the next use reads the settings again."""
    global _current
    with _lock:
        old, _current = _current, None
    if old is not None:
        old.flush()


def _forget_after_fork() -> None:
    global _current, _lock
    _current = None
    _lock = threading.Lock()


def _settings_changed(setting: str, **_kwargs) -> None:
    if setting.startswith("TRACKING_") or setting in ("NO_TRACKING_PREFIXES",
                                                       "DEFAULT_TRACKING_TEMPLATE"):
        reset()


os.register_at_fork(after_in_child=_forget_after_fork)
setting_changed.connect(_settings_changed)
atexit.register(lambda: _current is not None and _current.flush())
