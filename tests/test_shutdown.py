"""Stopping the server loses no request it accepted: SIGTERM under load answers every connection and exits within
its bound; a rolling restart of two replicas behind a real haproxy loses nothing; a SIGKILLed replica loses at most
the requests in flight on it. The scenarios are in ``tests/rollout.py`` (``bench/rollout.py`` records them)."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from service import shutdown
from service.settings import Settings
from tests.load_balancer import haproxy_binary
from tests.rollout import rolling_restart, sigkill_one, sigterm_under_load

LAME_DUCK_SECONDS = "2"  # > haproxy's check interval (0.2 s) with room for a busy machine


@pytest.fixture(scope="module")
def haproxy() -> str:
    return haproxy_binary()


@pytest.fixture(scope="module")
def uploads(small_photos: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in small_photos]


def server_env(bentoml_home: Path, lame_duck_seconds: str) -> dict[str, str]:
    """The embedded default model, with a lame-duck period."""
    env = {"BENTOML_HOME": str(bentoml_home), "RESNET_LAB_MODEL": ""}
    return {**env, Settings.env_name("lame_duck_seconds"): lame_duck_seconds}


def test_refusing_new_connections_keeps_established_and_queued_ones() -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        address = server.getsockname()
        established = socket.create_connection(address)
        accepted, _ = server.accept()
        queued = socket.create_connection(address)  # handshake done, waiting in the accept queue
        assert shutdown.refuse_new_connections() >= 1
        try:
            with pytest.raises(TimeoutError):  # the SYN is dropped: no connection, whatever the wait
                socket.create_connection(address, timeout=0.5)
            established.sendall(b"still here")
            assert accepted.recv(16) == b"still here"
            late, _ = server.accept()
            queued.sendall(b"queued")
            assert late.recv(16) == b"queued"
        finally:
            shutdown.accept_new_connections()
        socket.create_connection(address, timeout=5).close()  # a restarted worker takes connections again
        for sock in (established, accepted, queued, late):
            sock.close()


def test_the_drain_ends_in_uvicorns_shutdown_even_where_no_filter_can_be_attached(monkeypatch) -> None:
    # a container's seccomp profile may forbid SO_ATTACH_FILTER (podman's did: EPERM); the server must still exit
    def forbidden() -> int:
        raise PermissionError(1, "Operation not permitted")

    stopped = []
    monkeypatch.setattr(shutdown, "refuse_new_connections", forbidden)
    monkeypatch.setattr(shutdown, "SETTLE_SECONDS", 0)
    with pytest.raises(PermissionError):
        asyncio.run(shutdown._shut_down(0, lambda signum, frame: stopped.append(signum)))
    assert stopped == [signal.SIGTERM]


def test_sigterm_under_load_answers_every_connection(bentoml_home: Path, uploads: list[bytes], tmp_path: Path) -> None:
    result = sigterm_under_load(server_env(bentoml_home, LAME_DUCK_SECONDS), uploads, tmp_path, 16, warmup=200)
    print(result)
    assert result["failed"] == 0, result  # every request that got a connection got a 200
    assert result["refused"] <= 16, result  # each client stops at its first refused connection
    assert result["exit_code"] == 0 and result["exit_s"] <= result["bound_s"], result
    assert result["answered_after_sigterm"] > 0, result  # the lame duck serves
    assert 503 in result["readyz_during_lame_duck"], result  # BentoML's /readyz asked __is_ready__
    assert 503 in result["v2_ready_during_lame_duck"], result  # and the v2 protocol's readiness says the same
    assert result["connection_during_lame_duck"] == ["close"], result


def test_rolling_restart_behind_haproxy_loses_no_request(
    bentoml_home: Path, uploads: list[bytes], haproxy: str, tmp_path: Path
) -> None:
    env = server_env(bentoml_home, LAME_DUCK_SECONDS)
    result = rolling_restart(env, uploads, tmp_path, concurrency=8, haproxy=haproxy, limit=20_000)
    print(result)
    assert result["failed"] == 0 and result["refused"] == 0, result
    assert result["answered"] == result["sent"] and result["answered"] < 20_000, result  # restarts done in the limit
    assert [restart["exit_code"] for restart in result["restarts"]] == [0, 0], result
    assert all(restart["exit_s"] <= result["bound_s"] for restart in result["restarts"]), result


def test_sigkill_loses_at_most_the_requests_in_flight(
    bentoml_home: Path, uploads: list[bytes], haproxy: str, tmp_path: Path
) -> None:
    concurrency = 8
    result = sigkill_one(server_env(bentoml_home, "0"), uploads, tmp_path, concurrency, haproxy)
    print(result)
    # Lost: each client's request in flight at the kill, and at most one more sent while the dying processes'
    # listening socket still took connections into its backlog (SIGKILL reaches them one at a time, and each
    # takes a few ms to die); nothing once haproxy has taken the replica out.
    assert result["failed"] <= 2 * concurrency, result
    assert result["failed_after_out_of_rotation"] == 0 and result["refused"] == 0, result
    assert result["answered"] >= 300, result
