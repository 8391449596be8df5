"""Run the webhook server (uvicorn) with its in-process job worker threads."""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.errors import UsageError
from recoverctl.service.app import create_app
from recoverctl.service.auth import load_secrets
from recoverctl.service.metrics import Metrics
from recoverctl.service.state import ServiceState
from recoverctl.service.worker import Worker

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_state(cfg: Config, catalog: Catalog, *, workers: int, dry_run: bool, host: str) -> ServiceState:
    """Return the server state; raise UsageError for a non-loopback bind without auth."""
    secrets = load_secrets(cfg.serve.auth)
    if not secrets.configured and not is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host} without authentication",
            hint="set serve.auth.bearer_token_file (or hmac_secret_file), or bind to 127.0.0.1",
        )
    worker = (
        Worker(
            cfg,
            catalog,
            concurrency=workers,
            lease=cfg.serve.lease,
            poll_interval=cfg.serve.poll_interval,
            name="serve",
        )
        if workers > 0
        else None
    )
    return ServiceState(
        cfg=cfg,
        catalog=catalog,
        secrets=secrets,
        metrics=Metrics(cfg, catalog),
        worker=worker,
        force_dry_run=dry_run,
    )


def run_server(state: ServiceState, host: str, port: int, *, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; running jobs get the worker's grace period to finish."""
    app = create_app(state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.worker is not None:
            state.worker.start()
        state.batcher  # noqa: B018  (its writer thread starts now, not in the first request)
        state.rejections  # noqa: B018  (and so does the writer of refused-request tallies)
        # Everything loaded so far lives as long as the process: keep it out of the collector's
        # full passes, whose pauses would otherwise land on requests in flight.
        gc.freeze()
        log.info("recoverctl serve listening on %s:%s", host, port)
        yield
        # Refusals tallied since the last write are audited before the process exits.
        state.rejections.close()
        if state.worker is not None:
            state.worker.stop()

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=access_log,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
