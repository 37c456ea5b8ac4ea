"""The background sender: the request only puts its visit in a bounded queue, and one thread
per process posts what queued to ``POST /v1/visits/batch`` over a kept-alive connection.

- A batch is what queued within ``TRACKING_BATCH_INTERVAL`` of its first visit, at most
  ``TRACKING_BATCH_SIZE`` visits and 3 MiB, so that a busy site posts a few large batches a
  second rather than one request per page view.
- When the agent is away (or failing), the batch is kept and tried again with a growing pause,
  and the queue keeps taking visits up to ``TRACKING_QUEUE_SIZE``; past that new visits are
  dropped. Each of these is one log line when it starts and one when it ends, never an error in
  a request.
- A visit the agent refuses (it names it in its answer) is logged and left out, and the rest of
  its batch is sent again: the agent stores nothing of a batch with one bad visit.
- At exit the queue is flushed, for at most ``TRACKING_FLUSH_TIMEOUT`` seconds.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from .agent import Agent, AgentRefused, AgentUnavailable

log = logging.getLogger("tracking")

#: Largest body the sender posts; the agent takes 4 MiB.
MAX_BODY = 3 << 20
#: The pause before trying an unreachable agent again grows up to this, in seconds.
MAX_PAUSE = 5.0
#: Put in the queue to wake the thread when the process exits.
_WAKE = object()
#: A visit the agent named in a refusal: ``visit 3: `url` must be ...``.
_NAMED = re.compile(r"^visit (\d+): (.*)$")


def visit_json(visit: tuple) -> str:
    """The JSON of a queued visit ``(at, ip, session_key, user_agent, user, referrer, url)``."""
    at, ip, session_key, user_agent, user, referrer, url = visit
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"
    body = {"ip": ip, "url": url, "at": stamp}
    if session_key:
        body["session_key"] = session_key
    if user_agent:
        body["user_agent"] = user_agent
    if user:
        body["user"] = user
    if referrer:
        body["referrer"] = referrer
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class Stats:
    """What the sender did, for the log and the tests."""

    def __init__(self):
        self.sent = 0
        self.dropped_full = 0
        self.refused = 0
        self.unsent_at_exit = 0


class Sender:
    def __init__(self, agent: Agent, token: str, *, queue_size: int, batch_size: int,
                 batch_interval: float, flush_timeout: float):
        self.agent = agent
        self.token = token
        self.batch_size = batch_size
        self.batch_interval = batch_interval
        self.flush_timeout = flush_timeout
        self.stats = Stats()
        # Bounded by ``_pending``, which counts the batch in hand too.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queue_size = queue_size
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Set while visits are being dropped because the queue is full (logged once).
        self._full = False
        #: Set while the agent cannot be reached (logged once).
        self._away = False
        #: The visits that queued but have not been sent (in the queue or in hand).
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    # The request's side.

    def submit(self, visit: tuple) -> bool:
        """Queues a visit without waiting; False when ``queue_size`` visits wait already (in
        the queue or in a batch the agent has not taken) and it was dropped."""
        if self._thread is None:
            self._start()
        with self._lock:
            if self._pending >= self._queue_size:
                self.stats.dropped_full += 1
                first = not self._full
                self._full = True
            else:
                self._pending += 1
                first = None
                if self._full:
                    self._full = False
                    log.warning("tracking: the visit queue has room again; %d visits were "
                                "dropped while it was full", self.stats.dropped_full)
        if first is not None:
            if first:
                log.warning(
                    "tracking: the visit queue is full (%d visits wait for the agent at %s); "
                    "dropping visits until it catches up", self._queue_size, self.agent.describe())
            return False
        self._queue.put_nowait(visit)
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tracking-sender",
                                                daemon=True)
                self._thread.start()

    # Waiting and stopping.

    def wait_idle(self, timeout: float) -> bool:
        """Waits until every queued visit was sent or given up on; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def flush(self) -> None:
        """Sends what is queued, for at most ``flush_timeout`` seconds, and stops the thread.
        Registered with ``atexit``."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._queue.put_nowait(_WAKE)
        thread.join(self.flush_timeout)
        with self._lock:
            left = self._pending
        if left:
            self.stats.unsent_at_exit = left
            log.warning("tracking: %d visits were not sent to the agent at %s before exit",
                        left, self.agent.describe())

    # The thread's side.

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            if self._pending <= 0:
                self._idle.notify_all()

    def _take(self, block: bool, timeout: float | None = None) -> tuple | None:
        """The next queued visit; ``None`` when there is none (within ``timeout``, or at once
        when not blocking), or when the exit woke the thread."""
        try:
            item = self._queue.get(block=block, timeout=timeout if block else None)
        except queue.Empty:
            return None
        return None if item is _WAKE else item

    def _collect(self, batch: list[str]) -> None:
        """Adds queued visits to ``batch``: waits for the first one (while not stopping), then
        for more until the interval is over, the batch is full, or it holds 3 MiB."""
        size = sum(len(v) + 1 for v in batch)
        deadline = None
        while len(batch) < self.batch_size and size < MAX_BODY:
            stopping = self._stopping.is_set()
            if not batch:
                if stopping:
                    item = self._take(block=False)
                    if item is None:
                        return
                else:
                    item = self._take(block=True, timeout=1.0)
                    if item is None:
                        continue
            else:
                if deadline is None:
                    deadline = time.monotonic() + self.batch_interval
                left = deadline - time.monotonic()
                if stopping or left <= 0:
                    item = self._take(block=False)
                else:
                    item = self._take(block=True, timeout=left)
                if item is None:
                    return
            text = visit_json(item)
            batch.append(text)
            size += len(text.encode()) + 1

    def _run(self) -> None:
        batch: list[str] = []
        pause = 0.25
        while True:
            self._collect(batch)
            if not batch:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._post(batch)
            except AgentUnavailable as error:
                if not self._away:
                    self._away = True
                    log.warning(
                        "tracking: cannot send visits to the agent (%s); keeping up to %d "
                        "visits and trying again", error, self._queue_size)
                if self._stopping.is_set():
                    self.agent.close()
                    return
                # Sleeps unless asked to stop, then tries once more before giving up.
                self._stopping.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
                continue
            if self._away:
                self._away = False
                log.warning("tracking: the agent at %s answers again; sending the visits kept "
                            "meanwhile", self.agent.describe())
            pause = 0.25
            n = len(batch)
            batch = []
            self._done(n)

    def _post(self, batch: list[str]) -> None:
        """Posts ``batch``; visits the agent refuses by name are logged and left out, and the
        rest is posted again. Raises ``AgentUnavailable`` with the batch intact."""
        while batch:
            body = ("[" + ",".join(batch) + "]").encode()
            try:
                self.agent.call_raw("POST", "/v1/visits/batch", self.token, body)
            except AgentRefused as refusal:
                named = {}
                for line in refusal.details:
                    m = _NAMED.match(line)
                    if m and int(m.group(1)) < len(batch):
                        named[int(m.group(1))] = m.group(2)
                if refusal.status == 400 and named:
                    for i, why in sorted(named.items()):
                        log.error("tracking: the agent refused a visit (%s): %s", why,
                                  batch[i][:300])
                    self.stats.refused += len(named)
                    self._done(len(named))
                    batch[:] = [v for i, v in enumerate(batch) if i not in named]
                    continue
                log.error("tracking: the agent refused %d visits (%s)%s", len(batch),
                          refusal, _hint(refusal.status))
                self.stats.refused += len(batch)
                return
            self.stats.sent += len(batch)
            return


def _hint(status: int) -> str:
    if status == 401:
        return ": TRACKING_HOOK_TOKEN is not the agent's hook token"
    return ""
