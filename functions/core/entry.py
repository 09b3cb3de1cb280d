"""What every function's ``main.py`` ends with, written once: the process's service built
from the environment on first use (never at import), and the framework's own errors in the
one problem shape."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import functions_framework
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
