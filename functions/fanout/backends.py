"""The fan-out itself: one call per backend, all at once, under one deadline.

Calls run on a thread pool over the proxy's keep-alive connections (``core.client``), each
forwarding the request id and trace context (``functions.core.client.forwarded_headers``). Whatever
has not answered when the deadline passes is a ``timeout`` failure; the proxy answers
with the rest at once instead of waiting for it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, wait
from typing import Any

import orjson

from functions.core.client import Client, forwarded_headers
from functions.fanout.logic import Answer, Failure, Fanned, Outcome

Call = Callable[[], Outcome]


class Backends:
    """The named backends of one proxy, called over ``client`` from the threads of ``pool``."""

    def __init__(
        self, urls: Mapping[str, str], deadline: float, client: Client, pool: Executor
    ) -> None:
        self.urls, self.deadline, self.client, self.pool = dict(urls), deadline, client, pool
        self._samples: dict[str, Any] = {}
        self._lock = threading.Lock()

    def gather(self, calls: Mapping[str, Call]) -> Fanned:
        """Make every call at once; those not done by the deadline are timeouts."""
        futures = {name: self.pool.submit(call) for name, call in calls.items()}
        done, _ = wait(futures.values(), timeout=self.deadline)
        late = Failure(504, "timeout", f"no answer within {self.deadline:g}s")
        return Fanned({n: f.result() if f in done else late for n, f in futures.items()})

    def each(
        self,
        method: str,
        path: str,
        rid: str,
        incoming: Mapping[str, str],
        body: Any = None,
    ) -> Fanned:
        """The same call to every backend."""
        return self.gather(
            {
                name: self._call(method, url + path, rid, incoming, body)
                for name, url in self.urls.items()
            }
        )

    def each_with_sample(self, rid: str, incoming: Mapping[str, str]) -> Fanned:
        """``POST /predict`` to every backend with its own sample (from its ``/metadata``)."""

        def call(name: str, url: str) -> Outcome:
            sample = self._sample(name, url, rid, incoming)
            if isinstance(sample, Failure):
                return sample
            return fetch(
                self.client, "POST", f"{url}/predict", rid, self.deadline, incoming, sample
            )

        return self.gather({n: functools.partial(call, n, u) for n, u in self.urls.items()})

    def _call(
        self, method: str, url: str, rid: str, incoming: Mapping[str, str], body: Any
    ) -> Call:
        return lambda: fetch(self.client, method, url, rid, self.deadline, incoming, body)

    def _sample(self, name: str, url: str, rid: str, incoming: Mapping[str, str]) -> Any:
        with self._lock:
            if name in self._samples:
                return self._samples[name]
        outcome = fetch(self.client, "GET", f"{url}/metadata", rid, self.deadline, incoming)
        if isinstance(outcome, Failure):
            return outcome
        if "data_sample" not in outcome.body:
            return Failure(502, "bad-answer", f"{url}/metadata has no data_sample")
        sample = {"data": outcome.body["data_sample"]}
        with self._lock:
            self._samples[name] = sample
        return sample


def fetch(
    client: Client,
    method: str,
    url: str,
    rid: str,
    seconds: float,
    incoming: Mapping[str, str],
    body: Any = None,
) -> Outcome:
    """One backend call as an outcome: never raises for what a backend can do wrong."""
    headers = forwarded_headers(rid, incoming)
    try:
        reply = client.request(method, url, timeout=seconds, headers=headers, json=body)
    except TimeoutError:
        return Failure(504, "timeout", f"no answer within {seconds:g}s")
    except OSError as e:
        return Failure(503, "unavailable", f"{url} is unreachable: {type(e).__name__}")
    try:
        parsed = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        parsed = None
    if reply.status >= 400:
        problem = parsed if isinstance(parsed, dict) else None
        detail = str((problem or {}).get("detail") or reply.reason)
        return Failure(reply.status, "backend-error", detail, problem)
    if not isinstance(parsed, dict):
        return Failure(502, "bad-answer", f"{url} answered no JSON object")
    return Answer(parsed)
