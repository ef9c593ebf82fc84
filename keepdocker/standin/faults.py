"""Fault injection for reliability tests: a seeded fraction of requests answered 503, added latency, and a slow link."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

__all__ = ["FaultInjector"]


@dataclass
class FaultInjector:
    """Decides, reproducibly for a given seed, which requests fail; off (all zero) by default."""

    api_failure_rate: float = 0.0
    keep_failure_rate: float = 0.0
    latency_ms: int = 0
    keep_mib_per_second: float = 0.0  # one link shared by every Keep transfer (0: unlimited), like a remote cluster
    seed: int | None = None
    _api_rng: random.Random = field(init=False)
    _keep_rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _link_free_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        for name in ("api_failure_rate", "keep_failure_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {self.latency_ms}")
        if self.keep_mib_per_second < 0:
            raise ValueError(f"keep_mib_per_second must not be negative, got {self.keep_mib_per_second}")
        self._api_rng = random.Random(self.seed)
        self._keep_rng = random.Random(None if self.seed is None else self.seed + 1)

    def delay(self) -> None:
        """Sleep for the configured latency."""
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)

    def keep_link(self, nbytes: int) -> None:
        """Wait until ``nbytes`` have passed the shared Keep link (transfers queue behind each other on it)."""
        if not self.keep_mib_per_second or nbytes <= 0:
            return
        with self._lock:
            start = max(time.monotonic(), self._link_free_at)
            self._link_free_at = start + nbytes / (self.keep_mib_per_second * (1 << 20))
            done_at = self._link_free_at
        time.sleep(max(0.0, done_at - time.monotonic()))

    def fail_api(self) -> bool:
        """True when this API request should be answered 503."""
        if not self.api_failure_rate:
            return False
        with self._lock:
            return self._api_rng.random() < self.api_failure_rate

    def fail_keep(self) -> bool:
        """True when this Keep request should be answered 503."""
        if not self.keep_failure_rate:
            return False
        with self._lock:
            return self._keep_rng.random() < self.keep_failure_rate
