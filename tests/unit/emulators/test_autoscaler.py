"""The KPA's decisions from its inputs, as Knative documents them, on a clock of our own."""

from __future__ import annotations

import pytest

from emulators.autoscaler import TICK, AutoscalerConfig, Kpa, Scaling

A = "autoscaling.knative.dev/"


def scaling(cc: int = 2, config: AutoscalerConfig | None = None, **annotations: str) -> Scaling:
    keyed = {A + key.replace("_", "-"): value for key, value in annotations.items()}
    return Scaling.of(keyed, cc, config or AutoscalerConfig())


def run(
    kpa: Kpa, start: float, seconds: float, concurrency: float, ready: int
) -> tuple[float, int]:
    """Feed a steady concurrency for ``seconds``, one sample a tick; the last decision."""
    now, wanted = start, kpa.decided
    while now < start + seconds:
        now += TICK
        kpa.observe(now, concurrency)
        wanted = kpa.desired(now, ready)
        ready = wanted  # replicas come up at once, for the arithmetic
    return now, wanted


@pytest.mark.parametrize(
    ("cc", "annotations", "target"),
    [
        (2, {"target_utilization_percentage": "70"}, 1.4),
        (10, {}, 7.0),  # config-autoscaler's 70 %
        (0, {}, 70.0),  # containerConcurrency 0: container-concurrency-target-default 100
        (2, {"target": "5"}, 5.0),  # the soft target wins
    ],
)
def test_the_target_per_replica(cc: int, annotations: dict[str, str], target: float) -> None:
    assert scaling(cc, **annotations).target == pytest.approx(target)


def test_scales_out_to_what_the_concurrency_needs_within_max_scale() -> None:
    kpa = Kpa(scaling(2, max_scale="3"), 0.0)
    _, wanted = run(kpa, 0.0, 70, concurrency=3.0, ready=1)  # 3 / 1.4 per replica
    assert wanted == 3
    _, wanted = run(kpa, 70.0, 70, concurrency=30.0, ready=3)
    assert wanted == 3  # max-scale


def test_a_burst_panics_up_at_once_and_holds_for_a_stable_window() -> None:
    kpa = Kpa(scaling(2), 0.0)
    run(kpa, 0.0, 60, concurrency=1.0, ready=1)
    kpa.observe(62.0, 10.0)  # the panic window (6 s) sees it at once, the stable one barely
    assert kpa.desired(62.0, 1) == 3  # ceil(3.25 / 1.4) over 6 s, where 60 s says 1
    assert "panic" in kpa.reason
    kpa.observe(64.0, 0.5)
    assert kpa.desired(64.0, 3) == 3  # in panic it never comes down
    run(kpa, 64.0, 56, concurrency=0.5, ready=3)
    assert kpa.decided == 3  # still within a stable window of the panic
    run(kpa, 120.0, 10, concurrency=0.5, ready=3)
    assert kpa.decided == 1


def test_scales_in_at_most_by_half_a_decision_then_to_zero_after_the_grace() -> None:
    config = AutoscalerConfig(stable_window=6.0, scale_to_zero_grace_period=4.0)
    kpa = Kpa(scaling(2, config), 0.0)
    kpa.decided = 8
    kpa.observe(100.0, 0.0)
    kpa.last_request = 99.0
    assert kpa.desired(100.0, 8) == 4  # halving, not straight to the stable want
    assert kpa.desired(100.1, 4) == 2
    assert kpa.desired(100.2, 2) == 1
    assert kpa.desired(100.3, 1) == 1  # idle for less than the window plus the grace
    kpa.observe(108.5, 0.0)
    assert kpa.desired(108.5, 1) == 1
    kpa.observe(110.5, 0.0)  # 11.5 s idle > 6 + 4
    assert kpa.desired(110.5, 1) == 0
    assert kpa.reason.startswith("no request for")


def test_min_scale_retention_and_initial_scale() -> None:
    config = AutoscalerConfig(stable_window=6.0, scale_to_zero_grace_period=1.0)
    kept = Kpa(scaling(2, config, min_scale="1"), 0.0)
    _, wanted = run(kept, 0.0, 60, concurrency=0.0, ready=1)
    assert wanted == 1
    retained = Kpa(scaling(2, config, scale_to_zero_pod_retention_period="30s"), 0.0)
    _, wanted = run(retained, 0.0, 20, concurrency=0.0, ready=1)
    assert wanted == 1  # 20 s < 6 s + 30 s
    _, wanted = run(retained, 20.0, 20, concurrency=0.0, ready=1)
    assert wanted == 0
    assert Kpa(scaling(2, initial_scale="3"), 0.0).decided == 3
    # 0 only where config-autoscaler allows it (Knative's webhook refuses it otherwise)
    assert scaling(2, initial_scale="0").initial_scale == 1
    allowed = AutoscalerConfig(allow_zero_initial_scale=True)
    assert scaling(2, allowed, initial_scale="0").initial_scale == 0


def test_a_held_request_scales_from_zero_at_once() -> None:
    config = AutoscalerConfig(stable_window=6.0, scale_to_zero_grace_period=1.0)
    kpa = Kpa(scaling(2, config), 0.0)
    run(kpa, 0.0, 20, concurrency=0.0, ready=1)
    assert kpa.decided == 0
    assert kpa.desired(20.5, 0, wanted_now=True) == 1
    assert kpa.reason == "a request is waiting (activator)"


def test_the_stable_window_annotation_and_a_local_cap() -> None:
    assert scaling(2, window="10s").stable_window == 10.0
    assert scaling(2, window="10s").panic_window == pytest.approx(
        TICK
    )  # 10 % of it, a tick at least
    capped = AutoscalerConfig(max_scale_limit=2)
    assert scaling(2, capped, max_scale="10").max_scale == 2
    assert scaling(2, capped).max_scale == 2  # unbounded becomes the cap
