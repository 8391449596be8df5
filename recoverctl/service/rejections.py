"""Refused hook requests: counted in memory, written as one row per group and interval, throttled.

A refused request used to cost one fsync'd catalog transaction, so a flood of unauthenticated
requests queued the legitimate alerts' commits behind its own. Now a refusal is a dictionary
update on the event loop: refusals are tallied per (source, outcome, reason, peer address) and a
background thread writes each tally as one `rejected` decision plus one audit-log entry every
`serve.rejections.flush_every` (and at shutdown) — still audited, in a handful of rows however
many requests there were.

Each peer address also has a token bucket for unauthenticated refusals (`burst`, refilled at
`per_second`): past it, a request that fails authentication is answered 429 with Retry-After
instead of 401. An authenticated request is never throttled, so a sender sharing an address with
an attacker (a proxy, a NAT) still gets its alerts in.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from recoverctl.actions.alert_intake import RejectionTally, record_rejections
from recoverctl.catalog import Catalog
from recoverctl.config import RejectionLimits
from recoverctl.errors import CatalogError

log = logging.getLogger(__name__)

# Distinct (source, outcome, reason, peer) groups and peer buckets held at most: a flood from
# many addresses folds into one overflow group instead of growing memory.
MAX_GROUPS = 1000
MAX_PEERS = 10_000
OVERFLOW = "(more groups than fit in one interval)"


@dataclass
class _Bucket:
    tokens: float
    at: float


class RejectionLog:
    """Tally refusals, throttle unauthenticated ones per peer, write tallies in the background."""

    def __init__(self, catalog: Catalog, limits: RejectionLimits):
        self.catalog = catalog
        self.limits = limits
        self._pending: dict[tuple[str, str, str, str], RejectionTally] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recoverctl-rejections", daemon=True)
        self._thread.start()

    @property
    def retry_after(self) -> int:
        """Seconds until a throttled peer has a token again."""
        return max(1, math.ceil(1 / self.limits.per_second))

    def refuse(self, source: str, outcome: str, reason: str, peer: str, *, throttle: bool) -> bool:
        """Count one refused request; return True when `peer` is over its budget (answer 429).

        `throttle` is for requests that failed authentication: only those spend the peer's tokens.
        """
        now = time.time()
        with self._lock:
            limited = throttle and not self._take(peer, now)
            if limited:
                outcome, reason = "rate_limited", "too many unauthenticated requests"
            key = (source, outcome, reason, peer)
            if key not in self._pending and len(self._pending) >= MAX_GROUPS:
                key = (source, outcome, OVERFLOW, "*")
            tally = self._pending.get(key)
            if tally is None:
                self._pending[key] = RejectionTally(1, now, now)
            else:
                tally.count += 1
                tally.last_at = now
        return limited

    def _take(self, peer: str, now: float) -> bool:
        limits = self.limits
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= MAX_PEERS:
                self._forget_full_buckets(now)
            bucket = self._buckets[peer] = _Bucket(float(limits.burst), now)
        bucket.tokens = min(float(limits.burst), bucket.tokens + (now - bucket.at) * limits.per_second)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def _forget_full_buckets(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket; past that, the stalest go first.
        limits = self.limits
        refill = limits.burst / limits.per_second
        for peer in [p for p, b in self._buckets.items() if now - b.at >= refill]:
            del self._buckets[peer]
        if len(self._buckets) >= MAX_PEERS:
            stalest = sorted(self._buckets.items(), key=lambda kv: kv[1].at)[: MAX_PEERS // 2]
            for peer, _ in stalest:
                del self._buckets[peer]

    def flush(self) -> int:
        """Write the pending tallies (one transaction); return how many groups were written.

        On a catalog outage the tallies are kept for the next attempt.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        try:
            record_rejections(self.catalog, pending)
        except CatalogError as e:
            log.warning("could not record %d refused request group(s), retrying later: %s", len(pending), e)
            with self._lock:
                for key, old in pending.items():
                    tally = self._pending.setdefault(key, RejectionTally(0, old.first_at, old.last_at))
                    tally.count += old.count
                    tally.first_at = min(tally.first_at, old.first_at)
            return 0
        return len(pending)

    def _run(self) -> None:
        while not self._stop.wait(self.limits.flush_every):
            self.flush()

    def close(self) -> None:
        """Stop the background writer and write what is pending."""
        self._stop.set()
        self._thread.join(30)
        self.flush()
