"""Calls to the agent's HTTP API over kept-alive connections (one per thread), with the
agent's own error message when it refuses, and one error type when it cannot be reached."""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import quote

from .conf import Settings


class AgentUnavailable(Exception):
    """The agent could not be reached, timed out, or failed on its side (5xx)."""


class AgentRefused(Exception):
    """The agent answered 4xx: the request is wrong and would be wrong again."""

    def __init__(self, status: int, message: str, details: list[str]):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.details = details


#: Errors of a kept-alive connection the agent closed: a GET is sent again once on a new
#: connection. A POST is not (the agent may have taken it before closing); the sender keeps the
#: batch and tries again later.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _dropped(sock: socket.socket) -> bool:
    """Whether the agent closed an idle kept-alive connection: it is readable (at its end)
    while no answer is due."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Agent:
    """One agent, as ``settings`` names it. Safe to share between threads: each thread keeps a
    connection of its own."""

    def __init__(self, settings: Settings, timeout: float | None = None):
        self.settings = settings
        self.timeout = settings.agent_timeout if timeout is None else timeout
        self._local = threading.local()

    def describe(self) -> str:
        return self.settings.agent_url

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            s = self.settings
            if s.agent_tls:
                conn = http.client.HTTPSConnection(
                    s.agent_host, s.agent_port, timeout=self.timeout,
                    context=ssl.create_default_context())
            else:
                conn = http.client.HTTPConnection(s.agent_host, s.agent_port,
                                                  timeout=self.timeout)
            self._local.conn = conn
        elif conn.sock is not None and _dropped(conn.sock):
            conn.close()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        """Sends a request and returns the JSON answer of a 2xx.

        Raises ``AgentRefused`` for 4xx, ``AgentUnavailable`` for anything else that went wrong.
        """
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        return self.call_raw(method, path, token, payload)

    def call_raw(self, method: str, path: str, token: str, payload: bytes | None) -> Any:
        """``call`` with a body that is JSON text already."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE as error:
                self.close()
                if reused and attempt == 1 and method == "GET":
                    continue
                raise AgentUnavailable(f"{self.describe()}: {_describe(error)}") from error
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise AgentUnavailable(f"{self.describe()}: {_describe(error)}") from error
            if response.will_close:
                self.close()
            return _answer(self.describe(), method, path, response.status, data)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def get_bytes(self, path: str) -> tuple[str, bytes]:
        """A public asset of the agent (``/assets/world.svg``): its content type and bytes."""
        conn = self._connection()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise AgentUnavailable(f"{self.describe()}: {_describe(error)}") from error
        if response.will_close:
            self.close()
        if response.status != 200:
            raise AgentUnavailable(f"{self.describe()}: GET {path} answered {response.status}")
        return response.getheader("Content-Type", "application/octet-stream"), data

    # The calls the package makes.

    def banned(self, ip: str, token: str) -> bool:
        answer = self.call("GET", f"/v1/check?ip={quote(ip)}", token)
        return bool(answer["banned"])

    def active(self, path: str | None, token: str) -> dict:
        uri = "/v1/active" if path is None else f"/v1/active?path={quote(path, safe='/')}"
        return self.call("GET", uri, token)


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "no answer in time (timed out)"
    text = str(error) or type(error).__name__
    return text


def _answer(agent: str, method: str, path: str, status: int, data: bytes) -> Any:
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    if 200 <= status < 300:
        if parsed is None:
            raise AgentUnavailable(f"{agent}: {method} {path} answered {status} without JSON")
        return parsed
    message = parsed.get("error") if isinstance(parsed, dict) else None
    details = parsed.get("details", []) if isinstance(parsed, dict) else []
    message = message or data[:200].decode("utf-8", "replace") or f"status {status}"
    if 400 <= status < 500:
        raise AgentRefused(status, message, details if isinstance(details, list) else [])
    raise AgentUnavailable(f"{agent}: {method} {path} answered {status}: {message}")
