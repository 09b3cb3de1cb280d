"""Knative's autoscaler (KPA), simplified but with its inputs: how many replicas a revision
wants, from the concurrency its replicas saw.

Per revision, from its template's ``autoscaling.knative.dev/*`` annotations over the
cluster's ``config-autoscaler`` defaults (``AutoscalerConfig``, flags of ``make dev``):

- **target**: ``target``, else ``containerConcurrency`` (or ``container-concurrency-target-default``,
  100, where it is 0) x ``target-utilization-percentage`` (70 %);
- **desired** = ceil(average concurrency over the stable window / target), clamped to
  [``min-scale``, ``max-scale``]; a panic window (``panic-window-percentage`` of it, 10 %)
  whose average is ``panic-threshold-percentage`` (200 %) of what the ready replicas can take
  starts panic mode: the count goes up at once and does not come down until a stable window
  has passed without panic. Scale-down is at most halving per decision
  (``max-scale-down-rate`` 2), as Knative's;
- **to zero**: a revision that may (``min-scale`` 0) and saw no request for a whole stable
  window is scaled to zero after ``scale-to-zero-grace-period`` (30 s), or its
  ``scale-to-zero-pod-retention-period`` if that is longer.

``Kpa`` is pure: it is given samples (time, concurrency averaged since the last one) and the
ready count, and says the desired count; the launcher measures and acts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from emulators.durations import go_seconds
from emulators.knative_rules import _autoscaling_keys

TICK = 2.0  # seconds between decisions (Knative's tick-interval)


@dataclass(frozen=True)
class AutoscalerConfig:
    """``config-autoscaler``'s values that this emulation reads, with Knative's defaults."""

    stable_window: float = 60.0
    scale_to_zero_grace_period: float = 30.0
    scale_to_zero_pod_retention_period: float = 0.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    container_concurrency_target_percentage: float = 70.0
    container_concurrency_target_default: float = 100.0
    max_scale_down_rate: float = 2.0
    initial_scale: int = 1
    allow_zero_initial_scale: bool = False
    max_scale_limit: int = 0  # 0: none; else it caps every max-scale (a small machine)


@dataclass(frozen=True)
class Scaling:
    """One revision's scaling parameters, its annotations read over the config."""

    min_scale: int
    max_scale: int  # 0: unbounded
    initial_scale: int
    target: float  # concurrency per replica the autoscaler aims at
    stable_window: float
    panic_window: float
    panic_threshold: float  # a ratio: 2.0 is 200 %
    zero_after: float  # seconds after a stable window with no request before scaling to zero
    max_scale_down_rate: float

    @classmethod
    def of(
        cls,
        annotations: dict[str, Any],
        container_concurrency: int,
        config: AutoscalerConfig = AutoscalerConfig(),
    ) -> Scaling:
        values, _ = _autoscaling_keys(annotations, "")
        utilization = float(
            values.get(
                "target-utilization-percentage", config.container_concurrency_target_percentage
            )
        )
        if "target" in values:
            target = float(values["target"])
        else:
            per_replica = container_concurrency or config.container_concurrency_target_default
            target = per_replica * utilization / 100
        stable = go_seconds(values["window"]) if "window" in values else config.stable_window
        panic_pct = float(values.get("panic-window-percentage", config.panic_window_percentage))
        threshold = float(
            values.get("panic-threshold-percentage", config.panic_threshold_percentage)
        )
        retention = (
            go_seconds(values["scale-to-zero-pod-retention-period"])
            if "scale-to-zero-pod-retention-period" in values
            else config.scale_to_zero_pod_retention_period
        )
        max_scale = int(values.get("max-scale", 0))
        if config.max_scale_limit:
            max_scale = min(max_scale or config.max_scale_limit, config.max_scale_limit)
        min_scale = int(values.get("min-scale", 0))
        if max_scale:
            min_scale = min(min_scale, max_scale)
        initial = int(values.get("initial-scale", config.initial_scale))
        if initial == 0 and not config.allow_zero_initial_scale:
            initial = 1
        return cls(
            min_scale=min_scale,
            max_scale=max_scale,
            initial_scale=max(initial, min_scale),
            target=max(target, 0.01),
            stable_window=stable,
            panic_window=max(stable * panic_pct / 100, TICK),
            panic_threshold=threshold / 100,
            zero_after=max(config.scale_to_zero_grace_period, retention),
            max_scale_down_rate=config.max_scale_down_rate,
        )

    def clamp(self, count: int) -> int:
        count = max(count, self.min_scale)
        return min(count, self.max_scale) if self.max_scale else count


@dataclass
class Kpa:
    """The decisions for one revision. ``observe`` each sample, then ask ``desired``."""

    scaling: Scaling
    started: float
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    last_request: float = field(init=False)  # when concurrency was last above zero
    panic_until: float = -math.inf
    decided: int = field(init=False)
    reason: str = "initial-scale"

    def __post_init__(self) -> None:
        self.last_request = self.started  # a new revision counts as just used
        self.decided = self.scaling.initial_scale

    def observe(self, now: float, concurrency: float) -> None:
        self.samples.append((now, concurrency))
        if concurrency > 0:
            self.last_request = now
        while self.samples and self.samples[0][0] < now - self.scaling.stable_window:
            self.samples.popleft()

    def _average(self, now: float, window: float) -> float:
        values = [c for t, c in self.samples if t >= now - window]
        return sum(values) / len(values) if values else 0.0

    def desired(self, now: float, ready: int, wanted_now: bool = False) -> int:
        """The replicas wanted now; ``wanted_now``: a request is held for a revision at zero
        (the activator's poke, which scales from zero at once)."""
        s = self.scaling
        stable = self._average(now, s.stable_window)
        panic = self._average(now, s.panic_window)
        want_stable = math.ceil(stable / s.target)
        want_panic = math.ceil(panic / s.target)
        if ready and want_panic / ready >= s.panic_threshold:
            self.panic_until = now + s.stable_window
        if now < self.panic_until:
            count = max(want_panic, want_stable, self.decided)
            reason = f"panic: {panic:.1f} in flight over {s.panic_window:g}s, target {s.target:g}"
        else:
            # down by at most max-scale-down-rate a decision; from one, straight to zero
            floor = math.ceil(self.decided / s.max_scale_down_rate) if self.decided > 1 else 0
            count = max(want_stable, floor)
            reason = f"{stable:.2f} in flight over {s.stable_window:g}s, target {s.target:g}"
        if count == 0 and now - self.last_request < s.stable_window + s.zero_after:
            count = 1  # idle, but not for the stable window plus the grace period yet
        if count == 0:
            reason = f"no request for {now - self.last_request:.0f}s"
        if wanted_now:
            self.last_request = now
            count, reason = max(count, 1), "a request is waiting (activator)"
        count = s.clamp(count)
        if count != self.decided:
            self.reason = reason
        self.decided = count
        return count
