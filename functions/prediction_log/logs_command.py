"""Read the prediction log from a terminal: a table, or JSON lines for tools.

    python -m functions.prediction_log.logs_command [--url http://localhost:8080/prediction-log]
        [--job-id ID] [--model M] [--variant V] [--outliers] [--since T] [--until T]
        [--limit N] [--format table|jsonl] [--token T]

It calls the Service's ``GET /logs``, so it reads what a cluster's log holds as well, with
the query API's bearer token (``--token``, by default ``API_TOKEN``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
import orjson

from functions.core.settings import api_token_from_environment

COLUMNS = (
    "time",
    "job_id",
    "model",
    "variant",
    "endpoint",
    "status",
    "latency_ms",
    "is_outlier",
    "error",
)


def table(records: list[dict[str, Any]]) -> str:
    rows = [[_cell(r.get(c)) for c in COLUMNS] for r in records]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:19] if len(value) == 32 and value[10] == "T" else value[:60]
    return orjson.dumps(value).decode()[:60]


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Query the prediction log")
    parser.add_argument("--url", default="http://localhost:8080/prediction-log")
    parser.add_argument("--job-id")
    parser.add_argument("--model")
    parser.add_argument("--variant")
    parser.add_argument("--outliers", action="store_true", help="outliers only")
    parser.add_argument("--since", help="ISO-8601 time (UTC when no zone)")
    parser.add_argument("--until")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--format", choices=("table", "jsonl"), default="table")
    parser.add_argument(
        "--token",
        default=api_token_from_environment(),
        help="the query API's bearer token (default: $API_TOKEN; make dev prints it)",
    )
    args = parser.parse_args(argv)
    params = {
        "job_id": args.job_id, "model": args.model, "variant": args.variant,
        "outlier": "true" if args.outliers else None, "since": args.since, "until": args.until,
        "limit": args.limit,
    }  # fmt: skip
    response = httpx.get(
        f"{args.url}/logs",
        params={k: v for k, v in params.items() if v is not None},
        headers=bearer(args.token),
    )
    if response.status_code != 200:
        sys.stderr.write(
            f"{response.status_code}: {response.json().get('detail', response.text)}\n"
        )
        return 1
    records = response.json()["records"]
    if args.format == "jsonl":
        sys.stdout.write("".join(orjson.dumps(r).decode() + "\n" for r in records))
    else:
        sys.stdout.write(table(records) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
