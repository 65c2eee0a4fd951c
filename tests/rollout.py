"""Stopping servers under load, measured: SIGTERM to one server, a rolling restart of two replicas behind haproxy,
and one replica SIGKILLed behind haproxy. ``tests/test_shutdown.py`` asserts on what these return and
``bench/rollout.py`` records it.

Servers run the image's command line (``bentoml serve`` with the image's options, ``deploy/bento/Dockerfile.j2``) and
are signalled the way the kubelet signals a container: SIGTERM to the main process only (BentoML's arbiter, which
forwards it to its API worker), SIGKILL to every process.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from service.shutdown import SETTLE_SECONDS
from tests.load_balancer import LoadBalancer
from tests.server import REPO_ROOT, LocalServer, bentoml_serve, drain_timeout_s, free_port, image_command
from tests.traffic import Traffic

EXIT_MARGIN_S = 15  # process teardown after the drain (ORT session, circus) on a busy 2-core machine


def shutdown_bound_s(lame_duck_seconds: float) -> float:
    """The most seconds from SIGTERM to exit: lame duck, settling, the drain timeout, teardown."""
    return lame_duck_seconds + SETTLE_SECONDS + drain_timeout_s() + EXIT_MARGIN_S


def start_replica(env: dict[str, str], log: Path, port: int | None = None, source: Path = REPO_ROOT) -> LocalServer:
    """A server started as the image starts it, from ``source`` (a checkout with ``bentofile.yaml``), ready."""
    return bentoml_serve(env, log, port=port, options=image_command()[1:], cwd=source)


def terminate(server: LocalServer, lame_duck_seconds: float) -> tuple[int, float]:
    """SIGTERM to the server's main process; (exit code, seconds until it exited)."""
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=shutdown_bound_s(lame_duck_seconds) + 30)
    return code, time.monotonic() - started


def sigterm_under_load(
    env: dict[str, str], bodies: list[bytes], work: Path, concurrency: int, warmup: int, source: Path = REPO_ROOT
) -> dict:
    """One server under ``concurrency`` clients that keep sending; SIGTERM after ``warmup`` answers. Each client
    stops at its first refused connection (the server has gone)."""
    lame_duck = float(env.get("RESNET_LAB_LAME_DUCK_SECONDS", 0))
    server = start_replica(env, work / "sigterm.log", source=source)
    readyz: list[tuple[int, str]] = []
    v2_ready: list[tuple[int, str]] = []
    try:
        with Traffic(server.url, "/classify", bodies, concurrency, limit=100_000, stop_when_refused=True) as traffic:
            traffic.wait_answered(warmup, timeout=120)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            while server.process.poll() is None and time.monotonic() - signalled < lame_duck:
                readyz.append(_probe(server.url + "/readyz"))
                v2_ready.append(_probe(server.url + "/v2/health/ready"))
                time.sleep(0.1)
            code = server.process.wait(timeout=shutdown_bound_s(lame_duck) + 30)
            exit_s = time.monotonic() - signalled
            while not traffic.done():
                time.sleep(0.05)
    finally:
        server.stop()
    outcomes = traffic.outcomes
    return {
        **outcomes.summary(),
        "answered_after_sigterm": sum(1 for at in outcomes.answered_at if at > signalled),
        "exit_code": code,
        "exit_s": exit_s,
        "bound_s": shutdown_bound_s(lame_duck),
        "readyz_during_lame_duck": sorted({status for status, _ in readyz}),
        "connection_during_lame_duck": sorted({connection for status, connection in readyz if status == 503}),
        "v2_ready_during_lame_duck": sorted({status for status, _ in v2_ready}),
    }


def _probe(url: str) -> tuple[int, str]:
    """A readiness route's status and Connection header (0 and "" when no answer came)."""
    try:
        response = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return 0, ""
    return response.status_code, response.headers.get("connection", "")


def _two_replicas(env: dict[str, str], work: Path, source: Path) -> tuple[dict[str, int], dict[str, LocalServer]]:
    ports = {"replica1": free_port(), "replica2": free_port()}
    servers: dict[str, LocalServer] = {}
    try:
        for name, port in ports.items():
            servers[name] = start_replica(env, work / f"{name}-0.log", port, source)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return ports, servers


def rolling_restart(
    env: dict[str, str],
    bodies: list[bytes],
    work: Path,
    concurrency: int,
    haproxy: str,
    limit: int,
    source: Path = REPO_ROOT,
) -> dict:
    """Two replicas behind haproxy under ``concurrency`` clients; each replica in turn gets SIGTERM, exits, and is
    started again on its port, the next one only once haproxy sends to the new one. At most ``limit`` requests."""
    lame_duck = float(env.get("RESNET_LAB_LAME_DUCK_SECONDS", 0))
    ports, servers = _two_replicas(env, work, source)
    restarts: list[dict[str, Any]] = []
    try:
        with LoadBalancer(ports, work, haproxy) as balancer:
            for name in ports:
                balancer.wait_for(name, "UP")
            with Traffic(balancer.url, "/classify", bodies, concurrency, limit) as traffic:
                traffic.wait_answered(100, timeout=120)
                for name, port in ports.items():
                    signalled = time.monotonic()
                    servers[name].process.send_signal(signal.SIGTERM)
                    out_of_rotation_s = balancer.wait_for(name, "DOWN", timeout=lame_duck + 30)
                    code = servers[name].process.wait(timeout=shutdown_bound_s(lame_duck) + 30)
                    exit_s = time.monotonic() - signalled
                    servers[name] = start_replica(env, work / f"{name}-1.log", port, source)
                    balancer.wait_for(name, "UP")
                    restarts.append({"replica": name, "exit_code": code, "exit_s": exit_s,
                                     "out_of_rotation_s": out_of_rotation_s,
                                     "back_in_rotation_s": time.monotonic() - signalled})  # fmt: skip
                traffic.wait_answered(traffic.outcomes.answered + 100, timeout=120)  # both new replicas serve
                outcomes = traffic.stop()
    finally:
        for server in servers.values():
            server.stop()
    return {**outcomes.summary(), "restarts": restarts, "bound_s": shutdown_bound_s(lame_duck)}


def sigkill_one(env: dict[str, str], bodies: list[bytes], work: Path, concurrency: int, haproxy: str) -> dict:
    """Two replicas behind haproxy under ``concurrency`` clients; one replica's processes get SIGKILL. Requests in
    flight on it are lost, and those its dying listening socket still took; haproxy retries the connections refused
    after it."""
    ports, servers = _two_replicas(env, work, REPO_ROOT)
    try:
        with LoadBalancer(ports, work, haproxy) as balancer:
            for name in ports:
                balancer.wait_for(name, "UP")
            with Traffic(balancer.url, "/classify", bodies, concurrency, limit=100_000) as traffic:
                traffic.wait_answered(100, timeout=120)
                for pid in servers["replica1"].pids():  # circus starts the worker in a session of its own
                    os.kill(pid, signal.SIGKILL)
                servers["replica1"].process.wait(timeout=30)
                out_of_rotation_s = balancer.wait_for("replica1", "DOWN", timeout=30)
                failed_by_then = traffic.outcomes.failed
                traffic.wait_answered(traffic.outcomes.answered + 200, timeout=120)  # the survivor carries on
                outcomes = traffic.stop()
    finally:
        for server in servers.values():
            server.stop()
    return {**outcomes.summary(), "failed_after_out_of_rotation": outcomes.failed - failed_by_then,
            "out_of_rotation_s": out_of_rotation_s}  # fmt: skip
