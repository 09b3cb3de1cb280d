"""Load a model once per process, before it takes traffic, and report readiness meanwhile.

``ModelSlot.load()`` loads synchronously (production workers call it before they accept
connections); ``start()`` loads in a background thread so a dev server can answer readiness
with 503 until it is done. ``get()`` never makes a request wait for loading.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from functions.core.errors import FunctionError, ServiceUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ModelSlot(Generic[T]):
    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self._loader = loader
        self._value: T | None = None
        self._error: str | None = None
        self._lock = threading.Lock()  # held while loading
        self._start_lock = threading.Lock()  # never held long: readiness probes take it
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._value is not None

    @property
    def state(self) -> str:
        """``ok``, ``loading``, or the reason loading failed."""
        return "ok" if self.ready else (self._error or "loading")

    def load(self) -> T:
        with self._lock:
            if self._value is None:
                try:
                    self._value = self._loader()
                except FunctionError as e:
                    self._error = e.detail
                    logger.error("loading %s failed: %s", self.name, e.detail)
                    raise
                logger.info("%s loaded and warmed", self.name)
            return self._value

    def start(self) -> None:
        """Load in the background (once); callers see 503 from ``get`` until it is done."""
        with self._start_lock:
            if self._thread is None and self._value is None:
                self._thread = threading.Thread(target=self._load_quietly, daemon=True)
                self._thread.start()

    def get(self) -> T:
        if self._value is not None:
            return self._value
        self.start()
        raise ServiceUnavailable(
            f"{self.name} is not ready: {self.state}", headers={"Retry-After": "1"}
        )

    def _load_quietly(self) -> None:
        with contextlib.suppress(FunctionError):  # recorded in self._error, logged by load()
            self.load()
