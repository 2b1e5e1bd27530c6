"""``handle-server serve --workers N``: N server processes on one port.

Each worker is a whole server (its own event loop, store connections and cache) listening on
the same address with ``SO_REUSEPORT``, so the kernel spreads connections over them. They share
only the store, which keeps their caches true to each other's writes (see
``HandleStore.watch``). The parent starts them, restarts one that dies (a crash, an OOM kill),
and on SIGTERM or SIGINT stops them all, each finishing the requests it has. A worker that
dies before it listens has a start-up problem (a port in use, a bad certificate): the parent
then stops the others and exits, rather than restart it in a loop.

Metrics: the parent gives the workers a fresh folder in ``PROMETHEUS_MULTIPROC_DIR`` (unless it
is set already; then it is the operator's, and must be emptied before a start), so that
``/metrics`` on any worker reports all of them (see ``metrics.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import multiprocess

from ..config import Config
from .metrics import MULTIPROCESS_DIR

__all__ = ["run_workers"]

log = logging.getLogger("handle_server")

_STOP_WAIT = 30.0


def _reserve_port(host: str) -> socket.socket:
    """A socket bound (not listening) to a free port of ``host``, with ``SO_REUSEPORT``, so
    the workers can bind that port too and nobody else can take it meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def run_workers(
    config: Config, workers: int, worker_main: Callable[[Config, int, Any], int]
) -> int:
    """Run ``worker_main(config, number, listening)`` in ``workers`` processes until told to
    stop; each sets the event ``listening`` once it listens."""
    placeholder = None
    if config.server.port == 0:
        placeholder = _reserve_port(config.server.host)
        port = placeholder.getsockname()[1]
        config = config.replace(server=dataclasses.replace(config.server, port=port))
    metrics_dir = None
    if not os.environ.get(MULTIPROCESS_DIR):
        metrics_dir = tempfile.mkdtemp(prefix="handle-server-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir  # inherited by the workers
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[int, tuple[BaseProcess, Any]] = {}

    def start(number: int) -> None:
        listening = context.Event()
        proc = context.Process(
            target=worker_main,
            args=(config, number, listening),
            name=f"handle-server worker {number}",
        )
        proc.start()
        procs[number] = (proc, listening)

    status = 0
    try:
        for number in range(1, workers + 1):
            start(number)
        log.info(
            "%d workers on %s:%d (store: %s)",
            workers,
            config.server.host,
            config.server.port,
            config.storage.backend,
        )
        while not stopping and procs:
            multiprocessing.connection.wait([p.sentinel for p, _ in procs.values()], timeout=0.5)
            for number, (proc, listening) in list(procs.items()):
                if proc.is_alive() or stopping:
                    continue
                proc.join()
                del procs[number]
                _forget_metrics_of(proc.pid)
                if proc.exitcode == 0:
                    continue  # it was asked to stop (by a signal sent to it alone)
                if not listening.is_set():
                    log.error(
                        "worker %d failed to start (exit code %s); stopping", number, proc.exitcode
                    )
                    stopping, status = True, 1
                    break
                log.warning(
                    "worker %d died (exit code %s); starting it again", number, proc.exitcode
                )
                start(number)
    finally:
        for proc, _ in procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker finishes its requests and closes
        deadline = time.monotonic() + _STOP_WAIT
        for proc, _ in procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker %s did not stop in %.0f s; killing it", proc.name, _STOP_WAIT)
                proc.kill()
                proc.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if placeholder is not None:
            placeholder.close()
        if metrics_dir is not None:
            del os.environ[MULTIPROCESS_DIR]
            shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("all workers stopped")
    return status


def _forget_metrics_of(pid: int | None) -> None:
    """A dead worker's gauges stop counting (its counters still do: totals never go down)."""
    if pid is not None:
        multiprocess.mark_process_dead(pid)
