"""What every function's ``main.py`` ends with, written once: the process's service built
from the environment on first use (never at import), the HTTP function functions-framework
serves and the ``warm`` production workers call, and the framework's own errors in the one
problem shape.

    service = lazy_service(PredictionLogService, PredictionLogSettings, "prediction_log")
    prediction_log, warm = entry_points("prediction_log", service)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol, TypeVar, cast

import functions_framework
from flask import Request, Response
from werkzeug.exceptions import HTTPException

from functions.core.http import framework_error
from functions.core.logging import configure_logging
from functions.core.settings import BaseFunctionSettings, build_settings

S = TypeVar("S", bound=BaseFunctionSettings)
T = TypeVar("T")


def lazy_service(
    build: Callable[[S], T],
    settings: type[S],
    function: str,
    log_fields: Callable[[S], dict[str, str]] = lambda _: {},
) -> Callable[[], T]:
    """A cached factory: settings validated and JSON logging set up once, on first call."""

    @functools.cache
    def service() -> T:
        built = build_settings(settings)
        configure_logging(built.log_level, function=function, **log_fields(built))
        return build(built)

    # Flask's own errors (e.g. the framework's /robots.txt and /favicon.ico routes) too.
    functions_framework.errorhandler(HTTPException)(framework_error)
    return service


class Service(Protocol):
    @property
    def app(self) -> Callable[[Request], Response]: ...


def entry_points(
    target: str, service: Callable[[], Service]
) -> tuple[Callable[[Request], Response], Callable[[], None]]:
    """The function registered with functions-framework under ``target`` (what
    ``--target`` names), serving every path of the service, and ``warm``: the service built
    and, where it has a ``warm()`` (a model to load), warmed before traffic."""

    def function(request: Request) -> Response:
        return service().app(request)

    function.__name__ = function.__qualname__ = target
    function.__doc__ = f"Every path of {target}: see its service's routes."

    def warm() -> None:
        built = service()
        if (warm_up := getattr(built, "warm", None)) is not None:
            warm_up()

    registered = cast(Callable[[Request], Response], functions_framework.http(function))
    registered.warm = warm  # type: ignore[attr-defined]  # what core.serve calls, per target
    return registered, warm
