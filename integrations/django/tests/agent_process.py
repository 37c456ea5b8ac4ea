"""The real ``tracking`` agent for the unit tests, in a network namespace of their own.

The test process joins that namespace before anything opens a socket, so the package under
test reaches the agent at its default ``TRACKING_AGENT_URL`` (127.0.0.1:8080) and can reach
nothing else; every thread and child process started afterwards is in it too. The agent
attaches its XDP program to the namespace's loopback, pins under a directory of its own in
bpffs, and keeps its database in a temporary directory. Everything goes at the end of the
session: the agent (SIGTERM, then SIGKILL), its pins (``tracking agent detach``), the
namespace.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.settings import ADMIN_TOKEN, HOOK_TOKEN

REPO = Path(__file__).resolve().parents[3]
CLONE_NEWNET = 0x40000000
URL = "http://127.0.0.1:8080"


class SetupError(Exception):
    """The tests cannot run here; the message says what is missing."""


def agent_binary() -> Path:
    given = os.environ.get("TRACKING_BIN")
    binary = Path(given) if given else REPO / "target" / "debug" / "tracking"
    if not binary.is_file():
        raise SetupError(f"no agent binary at {binary}: build it with `cargo xtask build` "
                         "(or name one in TRACKING_BIN)")
    return binary


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"`{' '.join(map(str, args))}` failed ({done.returncode}): "
                         f"{done.stderr.strip()}")
    return done.stdout


def ensure_bpffs() -> None:
    with open("/proc/mounts") as mounts:
        if any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in mounts):
            return
    run("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")


def enter(netns: str) -> None:
    """Moves the calling thread into the namespace (threads started later inherit it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise SetupError(f"cannot join network namespace {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def api(method: str, path: str, body=None, token: str = ADMIN_TOKEN, *,
        content_type: str = "application/json"):
    """Calls the agent directly (not through the package under test): ``(status, JSON)``."""
    data = None
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    request = urllib.request.Request(URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class AgentProcess:
    def __init__(self):
        if os.geteuid() != 0:
            raise SetupError("the unit tests run the real agent (XDP, a network namespace): "
                             "run them as root, as `cargo xtask test` does")
        self.binary = agent_binary()
        tag = f"{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
        self.netns = f"trk-pydj-{tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="trk-pydj-"))
        self.pins = Path("/sys/fs/bpf") / f"trk-pydj-{tag}"
        self.log_path = self.dir / "agent.log"
        self.process: subprocess.Popen | None = None
        run("ip", "netns", "add", self.netns)
        try:
            run("ip", "-n", self.netns, "link", "set", "lo", "up")
            ensure_bpffs()
            self.pins.mkdir()
            enter(self.netns)
            self.start()
        except BaseException:
            self.close()
            raise

    def start(self) -> None:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [str(self.binary), "agent", "run", "--iface", "lo",
             "--socket", str(self.dir / "tracking.sock"),
             "--database", str(self.dir / "tracking.db"), "--bpffs-dir", str(self.pins),
             "--http", "127.0.0.1:8080", "--hook-token", HOOK_TOKEN,
             "--admin-token", ADMIN_TOKEN],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                if api("GET", "/v1/status")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise SetupError(f"the agent exited ({self.process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SetupError(f"the agent did not answer within 30 s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.pins.exists():
            subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", "--", str(self.binary),
                            "agent", "detach", "--bpffs-dir", str(self.pins)],
                           capture_output=True)
            subprocess.run(["rm", "-rf", str(self.pins)], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.dir)], capture_output=True)

    # What the tests ask of the agent.

    def visitors(self) -> list[dict]:
        status, answer = api("GET", "/v1/visitors?active=true&limit=10000")
        assert status == 200, answer
        return answer

    def visitor(self, key: str) -> dict | None:
        return next((v for v in self.visitors() if v["key"] == key), None)

    def stats(self) -> dict:
        status, answer = api("GET", "/v1/stats")
        assert status == 200, answer
        return answer["visits"]

    def active(self, path: str | None = None) -> dict:
        uri = "/v1/active" if path is None else f"/v1/active?path={path}"
        status, answer = api("GET", uri, token=HOOK_TOKEN)
        assert status == 200, answer
        return answer

    def ban(self, *networks: str) -> None:
        status, answer = api("POST", "/v1/bans", {"networks": list(networks)})
        assert status == 200, answer

    def unban(self, *networks: str) -> None:
        status, answer = api("POST", "/v1/bans/remove", {"networks": list(networks)})
        assert status == 200, answer

    def visit(self, **fields) -> dict:
        status, answer = api("POST", "/v1/visits", fields, token=HOOK_TOKEN)
        assert status == 202, answer
        return answer
