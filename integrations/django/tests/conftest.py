"""The agent the tests talk to (see ``agent_process``), started once for the session and joined
before any test runs, and a fresh package runtime for every test."""

import time

import pytest

from tests.agent_process import AgentProcess, SetupError
from tracking import runtime

_agent = None


def pytest_sessionstart(session):
    global _agent
    try:
        _agent = AgentProcess()
    except SetupError as error:
        pytest.exit(f"cannot run the tests: {error}", returncode=1)


def pytest_sessionfinish(session, exitstatus):
    runtime.reset()
    if _agent is not None:
        _agent.close()


@pytest.fixture
def agent():
    return _agent


@pytest.fixture(autouse=True)
def fresh_runtime():
    runtime.reset()
    yield
    runtime.reset()


def eventually(check, timeout: float = 5.0, what: str = "the condition"):
    """Calls ``check`` until it returns something true; fails with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {value!r})")
        time.sleep(0.02)
