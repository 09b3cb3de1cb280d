"""Activator: a request for a revision with no ready replica is held until one is ready, as
Knative's activator holds it, instead of being refused.

That is what makes the platform's own start-up, a crash while the launcher restarts the
process, and (with scaling) a cold start look the same to a client: a slower answer, not a
503. The wait for a first replica is bounded by the revision's progress deadline (Knative's
``serving.knative.dev/progress-deadline`` annotation, else the platform's default of 120 s),
not by ``timeoutSeconds``, which counts from when a replica takes the request. A revision
that is stopped for good, or still not ready at its deadline, is a 503 that says why.

One poller per activator wakes the held requests of a revision together once it is ready, so
a thousand held requests cost one readiness check per tick, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

from emulators.durations import go_seconds
from functions.core.errors import ServiceUnavailable

PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
DEFAULT_PROGRESS_DEADLINE = 120.0  # Knative's default (config-deployment progress-deadline)


class Replica(Protocol):
    """What the activator reads of a revision's process (``launcher.Revision``)."""

    @property
    def ready(self) -> bool: ...

    @property
    def stopped(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...


class Activator:
    def __init__(
        self,
        replica: Callable[[str], Replica | None],
        progress_deadline: float = DEFAULT_PROGRESS_DEADLINE,
        poll: float = 0.05,
    ) -> None:
        """``replica`` finds the process of a revision by its name (None: none runs here)."""
        self._replica = replica
        self.progress_deadline = progress_deadline
        self._poll = poll
        self._woken: dict[str, asyncio.Event] = {}
        self._poller: asyncio.Task[None] | None = None
        self.held: Counter[str] = Counter()  # requests waiting now, per revision

    def deadline(self, revision: str) -> float:
        """Seconds a request may wait for the revision's first ready replica."""
        replica = self._replica(revision)
        value = replica.annotations.get(PROGRESS_DEADLINE) if replica else None
        return go_seconds(value) if value else self.progress_deadline

    async def ready(self, revision: str) -> None:
        """Return once ``revision`` has a ready replica; raise ServiceUnavailable (with the
        reason) when it has none here, is stopped for good, or is not ready in time."""
        replica = self._replica(revision)
        if replica is None:
            raise ServiceUnavailable(f"revision {revision} does not run locally")
        if replica.ready:
            return  # the common case costs one attribute read
        seconds = self.deadline(revision)
        until = time.monotonic() + seconds
        self.held[revision] += 1
        try:
            while not replica.ready:
                if replica.stopped:
                    raise ServiceUnavailable(f"revision {revision} is {replica.reason}")
                left = until - time.monotonic()
                if left <= 0:
                    raise ServiceUnavailable(
                        f"revision {revision} has no ready replica after {seconds:g}s "
                        f"(its progress deadline): {replica.reason}"
                    )
                woken = self._woken.setdefault(revision, asyncio.Event())
                self._start_poller()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), left)
        finally:
            self.held[revision] -= 1
            if not self.held[revision]:
                del self.held[revision]

    def _start_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Wake the held requests of every revision that became ready or stopped; end when
        nothing is held."""
        while self._woken:
            await asyncio.sleep(self._poll)
            for revision, woken in list(self._woken.items()):
                replica = self._replica(revision)
                if replica is None or replica.ready or replica.stopped:
                    woken.set()
                    del self._woken[revision]
            for revision in [r for r in self._woken if r not in self.held]:
                del self._woken[revision]  # its waiters gave up (their deadline, a disconnect)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
