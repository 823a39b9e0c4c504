"""Test helpers: a real ``mlflow server`` on 127.0.0.1, and a header-recording proxy.

``MlflowServer`` runs ``mlflow server`` with a sqlite backend store and a
local artifact destination under a directory of the test's choosing, on a
free port, and waits until ``/health`` answers. It can be stopped and started
again on the same port and store (a server that goes away and comes back).
Start-up takes about 5-10 s on a small machine, so test modules share one
server through a module-scoped fixture. The server's job runner (huey
consumers for GenAI scorer jobs, which tracking never uses) is off unless
``job_execution=True``: it costs two extra processes' start-up and CPU.
``workers`` is ``mlflow server --workers`` (uvicorn worker processes).

``RecordingProxy`` forwards every request to an upstream URL unchanged and
records its method, path, headers and body, so tests can see which headers
reached the server. ``stop()`` closes its port (connections refused, as for a
server that went away) and ``start()`` listens on the same port again.
``hold_after(n, path, until=None)`` lets ``n`` requests whose path contains
``path`` through (and any more until one whose body holds ``until``) and holds every later one (recorded, not forwarded) until
``release()``: a client can then be killed at a known point with requests
in flight, and ``release(forward=False)`` drops the held ones unanswered, as
if the killed client had never got them out.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite store under ``root``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        port: int | None = None,
        *,
        workers: int = 1,
        job_execution: bool = False,
    ) -> None:
        self.root = Path(root)
        self.workers = workers
        self.job_execution = job_execution
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # mlflow server must not inherit an MPI launcher's rank variables.
        env = {k: v for k, v in env.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
        if not self.job_execution:
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the server and its workers (its own process group), and wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        # Wait until nothing listens on the port any more.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    thread: str = ""


class RecordingProxy:
    """HTTP proxy on 127.0.0.1 that records each request and forwards it upstream."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # open client connections
        self._hold_path: str | None = None
        self._hold_left = 0  # matching requests still let through
        self._hold_needs: bytes | None = None  # ... and until one with these bytes went
        self._held = 0  # matching requests waiting for release()
        self._gate = threading.Event()
        self._gate.set()
        self._upstream = 0  # forwarded requests still waiting for the server's answer
        self._idle = threading.Condition(self._lock)
        self._forward_held = True
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                with proxy._lock:
                    proxy.requests.append(Request(self.command, self.path, headers, body))
                    hold = proxy._hold_path is not None and proxy._hold_path in self.path
                    needs = proxy._hold_needs
                    if hold and (proxy._hold_left > 0 or (needs is not None and needs in body)):
                        proxy._hold_left -= 1
                        if needs is not None and needs in body:
                            proxy._hold_needs = None
                        hold = False
                    elif hold and needs is not None:
                        hold = False  # still waiting for the first request with the bytes
                    if hold:
                        proxy._held += 1
                if hold:
                    proxy._gate.wait()
                    if not proxy._forward_held:
                        self.close_connection = True
                        return
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                with proxy._lock:
                    proxy._upstream += 1
                try:
                    up_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
                    up_headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                    conn.request(self.command, self.path, body=body or None, headers=up_headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                    with proxy._lock:
                        proxy._upstream -= 1
                        proxy._idle.notify_all()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self._handler = Handler
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RecordingProxy:
        """Listen (again) on the same port: the server is back."""
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: connections are refused, as for a dead server."""
        if not self._gate.is_set():
            self.release(forward=False)
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        # Kept-alive connections would go on being served: cut them too.
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hold_after(self, n: int, path: str, until: bytes | None = None) -> None:
        """Forward ``n`` more requests whose path contains ``path``; hold the later ones.

        ``until``: keep forwarding past ``n`` until one request whose body holds
        these bytes has gone through (a marker that concurrent senders may put
        on any of their requests, in whatever order they arrive).
        """
        with self._lock:
            self._hold_path, self._hold_left, self._held = path, n, 0
            self._hold_needs = until
            self._gate.clear()

    @property
    def held(self) -> int:
        """How many requests are held now (waiting for :meth:`release`)."""
        with self._lock:
            return self._held

    def release(self, forward: bool = True) -> None:
        """Stop holding: held requests go upstream, or with ``forward=False`` are dropped."""
        with self._lock:
            self._hold_path, self._held, self._forward_held = None, 0, forward
        self._gate.set()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every forwarded request has the server's answer; False on timeout.

        A client killed while its requests were forwarded leaves them running
        on the server: read the server's state only after this.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._upstream == 0, timeout)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def recorded(self) -> list[Request]:
        with self._lock:
            return list(self.requests)
