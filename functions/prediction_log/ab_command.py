"""Print a route's A/B figures as a table, and draw them as a PNG for people who would
rather look than read (latency percentiles and accuracy with its 95 % interval, per variant).

    python -m functions.prediction_log.ab_command --route ab-test
        [--url http://localhost:8080/prediction-log] [--png ab-test.png] [--token T]

``--token`` is the query API's bearer token (by default ``API_TOKEN``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from functions.core.settings import api_token_from_environment
from functions.prediction_log.logs_command import bearer

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def table(report: dict[str, Any]) -> str:
    head = f"{'variant':<10}{'requests':>9}{'errors':>7}{'forced':>7}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'labelled':>9}  accuracy (95% CI)      top labels"
    lines = [f"route {report['route']}", head]
    for name, v in report["variants"].items():
        lat = v["latency_ms"]
        accuracy = "-"
        if v["accuracy"] is not None:
            low, high = v["accuracy_ci95"]
            accuracy = f"{v['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
        labels = ", ".join(f"{k} {n}" for k, n in list(v["labels"].items())[:3])
        lines.append(
            f"{name:<10}{v['requests']:>9}{v['errors']:>7}{v['forced']:>7}{_ms(lat['p50'])}{_ms(lat['p95'])}"
            f"{_ms(lat['p99'])}{v['labelled']:>9}  {accuracy:<22} {labels}"
        )
    lines.append(f"verdict: {report['verdict']['reason']}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:>8.2f}" if value is not None else f"{'-':>8}"


def chart(report: dict[str, Any], path: Path) -> None:
    """Two panels: latency p50/p95/p99 bars, and accuracy points with their intervals."""
    variants = list(report["variants"].items())
    width, height, pad = 900, 420, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, 10), f"A/B test {report['route']}: {report['verdict']['reason']}", fill="black")
    panel = (width - 3 * pad) // 2
    top, bottom = 70, height - 60
    # latency panel
    highest = max((v["latency_ms"]["p99"] or 0.0) for _, v in variants) or 1.0
    draw.text((pad, top - 15), "latency ms (p50 / p95 / p99)", fill="black")
    slot = panel / max(1, len(variants))
    for i, (name, v) in enumerate(variants):
        for j, q in enumerate(("p50", "p95", "p99")):
            value = v["latency_ms"][q] or 0.0
            x0 = pad + i * slot + 10 + j * (slot - 20) / 3
            y0 = bottom - (bottom - top) * value / highest
            draw.rectangle(
                (x0, y0, x0 + (slot - 20) / 3 - 4, bottom), fill=COLOURS[i % len(COLOURS)]
            )
            draw.text((x0, y0 - 12), f"{value:.1f}", fill="black")
        draw.text((pad + i * slot + 10, bottom + 8), name, fill="black")
    # accuracy panel
    left = 2 * pad + panel
    draw.text((left, top - 15), "accuracy with 95% Wilson interval", fill="black")
    draw.line((left, bottom, left + panel, bottom), fill="gray")
    for i, (name, v) in enumerate(variants):
        x = left + (i + 0.5) * panel / max(1, len(variants))
        if v["accuracy"] is not None:
            low, high = v["accuracy_ci95"]

            def y(p: float) -> float:
                return bottom - (bottom - top) * p

            draw.line((x, y(low), x, y(high)), fill=COLOURS[i % len(COLOURS)], width=3)
            draw.ellipse(
                (x - 5, y(v["accuracy"]) - 5, x + 5, y(v["accuracy"]) + 5),
                fill=COLOURS[i % len(COLOURS)],
            )
            draw.text(
                (x + 8, y(v["accuracy"]) - 6),
                f"{v['accuracy']:.3f} (n={v['labelled']})",
                fill="black",
            )
        draw.text((x - 10, bottom + 8), name, fill="black")
    image.save(path, "PNG")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A/B figures of a route")
    parser.add_argument("--route", required=True)
    parser.add_argument("--url", default="http://localhost:8080/prediction-log")
    parser.add_argument("--png", type=Path, help="also draw the figures into this PNG file")
    parser.add_argument(
        "--token",
        default=api_token_from_environment(),
        help="the query API's bearer token (default: $API_TOKEN; make dev prints it)",
    )
    args = parser.parse_args(argv)
    response = httpx.get(
        f"{args.url}/ab-report", params={"route": args.route}, headers=bearer(args.token)
    )
    if response.status_code != 200:
        sys.stderr.write(
            f"{response.status_code}: {response.json().get('detail', response.text)}\n"
        )
        return 1
    report = response.json()
    sys.stdout.write(table(report) + "\n")
    if args.png:
        chart(report, args.png)
        sys.stdout.write(f"chart written to {args.png}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
