"""Settings from the environment, validated once at start-up.

Only this module and ``serve.py`` touch ``os.environ`` (ruff TID251): every function reads
its configuration through a ``BaseFunctionSettings`` subclass built by a cached factory, so a
bad value stops the process with a message naming the variable. A function's class combines
the concerns it has (``ModelSettings``, ``EventSettings``, ``JobStoreSettings``, ``ApiTokenSettings``,
``EventAuthSettings``) and has no field for any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Self, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from functions.core.event_auth import knative_audience

REPO_ROOT = Path(__file__).resolve().parents[2]


class SettingsError(RuntimeError):
    """A setting from the environment is missing or invalid; the message names it."""


class BaseFunctionSettings(BaseSettings):
    """What every function reads: limits, logging, its Knative names, where its calls go.
    Each other concern is a subclass of it, which a function's settings class combines
    with the others it has (``class PredictSettings(ModelSettings, EventSettings)``)."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="request body limit")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    k_service: str = Field("local", description="Knative Service name (set by Knative)")
    k_revision: str = Field("local", description="Knative Revision name (set by Knative)")
    # Both are handed to every Service: make dev sets the gateway, core.serve the directory.
    cluster_local_gateway: str | None = Field(
        None, description="where calls to *.svc.cluster.local go when no cluster DNS does"
    )
    prometheus_multiproc_dir: Path | None = Field(
        None, description="shared metrics directory when several worker processes serve"
    )


class ModelSettings(BaseFunctionSettings):
    """A function that reads model cards and their built artifacts."""

    model_dir: Path = Field(REPO_ROOT / "build" / "models", description="built model artifacts")
    model_cards: Path = Field(REPO_ROOT / "models", description="model cards (model.toml)")


class EventSettings(BaseFunctionSettings):
    """A function that publishes events (its prediction log records, its requests): where
    they go, the outbox they wait in, and what its records say it is."""

    k_sink: str | None = Field(None, description="where events go (a SinkBinding sets it)")
    event_transport: Literal["http", "pubsub"] = Field(
        "http", description="http (K_SINK) or pubsub"
    )
    pubsub_project: str | None = Field(None, description="Pub/Sub project (pubsub transport)")
    pubsub_topic: str | None = Field(None, description="Pub/Sub topic (pubsub transport)")
    variant: str | None = Field(
        None, description="A/B variant name, answered as `mode` and logged (default K_REVISION)"
    )
    route: str | None = Field(None, description="the route (e.g. ab-test) this Service serves")
    outbox_dir: Path = Field(REPO_ROOT / "build" / "outbox", description="durable event spool")
    outbox_max_bytes: int = Field(256 * 1024 * 1024, gt=0, description="spool bound on disk")
    outbox_sender: Literal["thread", "process"] = Field(
        "thread", description="who sends the outbox: a thread here, or core.serve's process"
    )

    @model_validator(mode="after")
    def _transport_configured(self) -> Self:
        if self.event_transport == "pubsub" and not (self.pubsub_project and self.pubsub_topic):
            raise ValueError("EVENT_TRANSPORT=pubsub needs PUBSUB_PROJECT and PUBSUB_TOPIC")
        return self

    @property
    def publishes(self) -> bool:
        """Whether this Service has somewhere to send events (a K_SINK, or Pub/Sub)."""
        return self.k_sink is not None or self.event_transport == "pubsub"

    def outbox_path(self) -> Path:
        """This Service's outbox (its workers write it, one sender drains it)."""
        return self.outbox_dir / self.k_service


DEFAULT_JOB_STORE = f"sqlite:///{REPO_ROOT / 'build' / 'jobs.sqlite3'}"


class JobStoreSettings(BaseFunctionSettings):
    """The job store the sync-async proxy and the async worker share (core.jobstore)."""

    job_store_url: str = Field(DEFAULT_JOB_STORE, description="sqlite:///path or redis://host/db")
    job_ttl_seconds: float = Field(86400.0, gt=0, description="how long jobs are kept")


class ApiTokenSettings(BaseFunctionSettings):
    """A function with routes declared ``auth="token"``: the bearer token they demand."""

    model_config = SettingsConfigDict(hide_input_in_errors=True)  # no error shows the token
    api_token: SecretStr | None = Field(
        None,
        min_length=16,
        description="the bearer token of the tokened routes (from a Secret; unset: they answer 503)",
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: object) -> object:
        # A Secret key left empty reads as no token, not as a token anyone can send.
        if isinstance(values, dict) and not str(values.get("api_token") or "").strip():
            values.pop("api_token", None)
        return values


# Where a pod reads its own namespace (the service-account mount, as client-go does).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _mounted_namespace() -> str:
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


class EventAuthSettings(BaseFunctionSettings):
    """A function with routes declared ``auth="event"`` (Trigger subscribers, dead-letter
    sinks): whether and how they check the token of each delivery (``core.event_auth``)."""

    event_auth: Literal["off", "oidc"] = Field(
        "off", description="off, or oidc: every event delivery must carry a valid token"
    )
    event_issuer: str | None = Field(
        None, description="the tokens' issuer (the cluster's service-account issuer)"
    )
    event_jwks_url: str | None = Field(
        None, description="the issuer's keys (default: jwks_uri of its discovery document)"
    )
    event_audience: str | None = Field(
        None, description="the audience tokens must name (default: this Service's, Knative's)"
    )
    event_ca_file: Path | None = Field(
        None, description="CA bundle the issuer is fetched with (default: the system's)"
    )
    pod_namespace: str = Field(
        default_factory=_mounted_namespace,
        description="this Service's namespace (default: the pod's service-account mount)",
    )

    @model_validator(mode="after")
    def _issuer_named(self) -> Self:
        if self.event_auth == "oidc" and not self.event_issuer:
            raise ValueError("EVENT_AUTH=oidc needs EVENT_ISSUER")
        return self

    @property
    def audience(self) -> str:
        """``EVENT_AUDIENCE``, else this Knative Service's audience."""
        return self.event_audience or knative_audience(
            "serving.knative.dev/v1", "Service", self.pod_namespace, self.k_service
        )


def api_token_from_environment() -> str | None:
    """``API_TOKEN`` as a command-line client reads it: the default of its ``--token``."""
    return os.environ.get("API_TOKEN") or None


def _name_values(value: object) -> object:
    """``a=x, b=y`` -> ``{"a": "x", "b": "y"}``, in order, spaces around each part dropped."""
    if not isinstance(value, str):
        return value
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, given = item.partition("=")
        name, given = name.strip(), given.strip()
        if not sep or not name or not given:
            raise ValueError(f"expected name=value, got {item!r}")
        if name in found:
            raise ValueError(f"{name!r} is named twice")
        found[name] = given
    return found


# A comma-separated list of name=value pairs in one variable (VARIANTS, WEIGHTS, BACKENDS),
# read as it is written: NoDecode keeps pydantic-settings from parsing it as JSON first.
NameValues = Annotated[dict[str, str], NoDecode, BeforeValidator(_name_values)]


S = TypeVar("S", bound=BaseFunctionSettings)


def build_settings(cls: type[S]) -> S:
    """Build ``cls`` from the environment, turning validation errors into one clear message."""
    try:
        return cls()
    except ValidationError as e:
        prefix = cls.model_config.get("env_prefix", "")
        names = ", ".join(
            f"{prefix}{'.'.join(str(p) for p in err['loc'])}".upper() + f" ({err['msg']})"
            for err in e.errors(include_url=False)
        )
        raise SettingsError(f"invalid settings for {cls.__name__}: {names}") from e


def disable_runtime_telemetry() -> None:
    """Turn ONNX Runtime's telemetry off for this process and the ones it starts; it must be
    in the environment before ``onnxruntime`` is first imported. A serving process never runs
    telemetry, so this overrides any value it was given."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
