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
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from emulators.durations import go_seconds
from functions.core.errors import ServiceUnavailable

PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
DEFAULT_PROGRESS_DEADLINE = 120.0  # Knative's default (config-deployment progress-deadline)


class Replica(Protocol):
    """One process of a revision, as the gateway counts requests at it."""

    url: str

    def begin(self) -> None: ...

    def end(self) -> None: ...


class Revision(Protocol):
    """What the activator reads of a revision (``launcher.Revision``)."""

    held: int
    queued: int  # waiting at its breaker (containerConcurrency reached)

    @property
    def ready(self) -> bool: ...

    @property
    def stopped(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def replicas(self) -> int: ...

    @property
    def desired(self) -> int: ...

    @property
    def replica_urls(self) -> list[str]: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def cold_start(self) -> float | None: ...

    @property
    def cold_starts(self) -> int: ...

    def pick(self) -> Replica | None: ...

    def wake(self) -> None: ...


class Activator:
    def __init__(
        self,
        revisions: Callable[[str], Revision | None],
        progress_deadline: float = DEFAULT_PROGRESS_DEADLINE,
        poll: float = 0.05,
    ) -> None:
        """``revisions`` finds a revision by its name (None: it does not run here)."""
        self._revision = revisions
        self.progress_deadline = progress_deadline
        self._poll = poll
        self._woken: dict[str, asyncio.Event] = {}
        self._poller: asyncio.Task[None] | None = None

    def revision(self, name: str) -> Revision | None:
        return self._revision(name)

    def revisions(self, names: Iterator[tuple[str, str]]) -> dict[str, tuple[str, Revision]]:
        """Of (service, revision name) pairs, those that run here: name -> (service, it)."""
        return {n: (s, r) for s, n in names if (r := self._revision(n)) is not None}

    def deadline(self, revision: str) -> float:
        """Seconds a request may wait for the revision's first ready replica."""
        found = self._revision(revision)
        value = found.annotations.get(PROGRESS_DEADLINE) if found else None
        return go_seconds(value) if value else self.progress_deadline

    async def acquire(self, name: str) -> Replica:
        """The least loaded ready replica of revision ``name``, its request counted as begun
        (the caller ends it), once there is one; ServiceUnavailable (with the reason) when the
        revision does not run here, is stopped for good, or has none ready in time."""
        revision = self._revision(name)
        if revision is None:
            raise ServiceUnavailable(f"revision {name} does not run locally")
        replica = revision.pick()
        if replica is None:
            replica = await self._hold(name, revision)
        replica.begin()
        return replica

    async def _hold(self, name: str, revision: Revision) -> Replica:
        seconds = self.deadline(name)
        until = time.monotonic() + seconds
        revision.held += 1
        try:
            while (replica := revision.pick()) is None:
                if revision.stopped:
                    raise ServiceUnavailable(f"revision {name} is {revision.reason}")
                left = until - time.monotonic()
                if left <= 0:
                    raise ServiceUnavailable(
                        f"revision {name} has no ready replica after {seconds:g}s "
                        f"(its progress deadline): {revision.reason}"
                    )
                revision.wake()  # scale from zero now, not at the next tick
                woken = self._woken.setdefault(name, asyncio.Event())
                self._start_poller()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, 1.0))
            return replica
        finally:
            revision.held -= 1

    def _start_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Wake the held requests of every revision that became ready or stopped; end when
        nothing is held."""
        while self._woken:
            await asyncio.sleep(self._poll)
            for name, woken in list(self._woken.items()):
                revision = self._revision(name)
                if revision is None or revision.ready or revision.stopped or not revision.held:
                    woken.set()  # ready, gone, or nobody waits any more
                    del self._woken[name]

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
