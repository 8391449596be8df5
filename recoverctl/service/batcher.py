"""Group commit for alert intake: concurrent requests are decided in one transaction per batch.

A decision costs well under a millisecond of work, but its commit costs an fsync (~10 ms on a
busy disk). One writer thread takes every request waiting at that moment, decides them in
arrival order in one transaction, and answers each — so 20 concurrent senders share one fsync
instead of queueing for twenty. A failed batch fails every request in it (nothing is written).

Requests wait on asyncio futures of their event loop, and a batch is handed back to the loop in
one callback: one wake-up of the loop per batch, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from typing import Any

from recoverctl.actions.alert_intake import AlertIn, IncidentMemory, StoredDecision, intake_batch
from recoverctl.catalog import Catalog
from recoverctl.config import Config

MAX_BATCH = 200
# One request: its alerts and the future its handler awaits.
_Pending = tuple[list[AlertIn], "asyncio.Future[list[StoredDecision]]"]


class IntakeBatcher:
    def __init__(self, cfg: Config, catalog: Catalog, *, force_dry_run: bool = False):
        self.cfg = cfg
        self.catalog = catalog
        self.force_dry_run = force_dry_run
        # Only this thread touches it: no lock needed.
        self.memory = IncidentMemory()
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="recoverctl-intake", daemon=True)
        self._thread.start()

    def submit(self, alerts: list[AlertIn]) -> asyncio.Future[list[StoredDecision]]:
        """Queue `alerts` (call from the event loop); the future gives the stored decisions or
        raises what intake raised."""
        future: asyncio.Future[list[StoredDecision]] = asyncio.get_running_loop().create_future()
        self._queue.put((alerts, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            results: list[list[StoredDecision]] | None = None
            error: BaseException | None = None
            try:
                results = intake_batch(
                    self.cfg,
                    self.catalog,
                    [alerts for alerts, _ in batch],
                    force_dry_run=self.force_dry_run,
                    memory=self.memory,
                )
            except BaseException as e:
                error = e
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, Any]]] = {}
            for i, pending in enumerate(batch):
                by_loop.setdefault(pending[1].get_loop(), []).append(
                    (pending, results[i] if results else None)
                )
            for loop, settled in by_loop.items():
                # A closed loop raises RuntimeError: nobody waits for those answers any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, settled, error)


def _settle(settled: list[tuple[_Pending, Any]], error: BaseException | None) -> None:
    for (_, future), result in settled:
        if future.done():  # the request was cancelled (client went away)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
