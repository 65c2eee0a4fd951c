"""A real haproxy (Debian's package) on loopback in front of local replicas: the single-machine model of a Kubernetes
Service in front of a Deployment's pods.

haproxy health-checks each replica on ``/readyz`` (as a readiness probe does), sends requests only to replicas whose
check passes, and retries a request on another replica when the connection to one fails (nothing was sent yet, so
that is safe for any request). It never retries a request a replica accepted: a request lost after it reached a
replica counts as failed. Installed by ``haproxy_binary()`` when missing (``apt-get install -y haproxy``).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.server import free_port

CHECK_INTERVAL_MS = 200  # one failed /readyz check takes a replica out; two passing ones bring it back
CHECK_TIMEOUT_S = 5  # a replica busy with the whole load may take a while to answer its check: not a failure
CONFIG = """\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout check {check_timeout}s
    retries 3
    retry-on conn-failure
    option redispatch 1

frontend web
    bind 127.0.0.1:{port}
    default_backend replicas

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter {interval}ms fall 1 rise 2
{servers}
"""


def haproxy_binary() -> str:
    """The haproxy program; installed from the distribution's packages if missing."""
    found = shutil.which("haproxy")
    if found is None:
        install = ["apt-get", "install", "-y", "-q", "haproxy"]
        if subprocess.run(install, capture_output=True, timeout=300).returncode != 0:  # no package lists yet
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=300)
            subprocess.run(install, check=True, capture_output=True, timeout=300)
        found = shutil.which("haproxy")
    if found is None:
        raise RuntimeError("haproxy not found and `apt-get install -y haproxy` did not provide it")
    return found


class LoadBalancer:
    """haproxy in the foreground on a free loopback port, in front of ``replicas`` (name -> port)."""

    def __init__(self, replicas: dict[str, int], work: Path, binary: str = "haproxy") -> None:
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in replicas.items())
        config = work / "haproxy.cfg"
        config.write_text(CONFIG.format(port=self.port, stats_port=self.stats_port, interval=CHECK_INTERVAL_MS,
                                        check_timeout=CHECK_TIMEOUT_S,
                                        servers=servers))  # fmt: skip
        subprocess.run([binary, "-c", "-q", "-f", str(config)], check=True)
        self.log = work / "haproxy.log"
        with open(self.log, "wb") as stream:
            self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=stream, stderr=stream)

    def status(self) -> dict[str, str]:
        """Each replica's state as haproxy sees it: ``UP``, ``DOWN``, ``UP 1/2``..."""
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {row["svname"]: row["status"] for row in rows if row["pxname"] == "replicas" and row["svname"] not in
                ("FRONTEND", "BACKEND")}  # fmt: skip

    def wait_for(self, replica: str, state: str, timeout: float = 60) -> float:
        """Block until haproxy reports ``replica`` in ``state``; the seconds it took."""
        started = time.monotonic()
        while (current := self._status_or_none(replica)) != state:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{replica} is {current}, not {state}, after {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def _status_or_none(self, replica: str) -> str | None:
        try:
            return self.status().get(replica)
        except httpx.TransportError:  # the stats frontend is not listening yet
            return None

    def stop(self) -> None:
        """Stop haproxy."""
        self.process.terminate()
        self.process.wait(timeout=10)

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
