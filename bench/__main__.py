"""`python -m bench <name>`: run one benchmark, print a table, write bench/results/<name>.json."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from aiokafka.errors import KafkaConnectionError

from agents.broker.client import hide_reported_connect_failures
from bench.env import BenchConfigError

BENCHES = (
    "core",
    "floor",
    "latency",
    "memory",
    "peer",
    "processor",
    "replay",
    "state",
    "storm",
    "throughput",
    "views",
)
RESULTS = Path(__file__).resolve().parent / "results"
EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"error: {message} (see: python -m bench --help)\n")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number above 0")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--repeats", type=_positive, default=5)
    parser.add_argument("--events", type=_positive, help="memory: replay a log of this many events")
    parser.add_argument(
        "--source", choices=("topic", "archive"), default="topic", help="memory: with --events"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    hide_reported_connect_failures()  # the one error line below says it
    try:
        result = _run(args)
    except BenchConfigError as error:
        return _fail(str(error))
    except KafkaConnectionError:
        where = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        return _fail(
            f"no Kafka broker answers at {where} (unset KAFKA_BOOTSTRAP_SERVERS and the "
            "bench starts a local one)"
            if where
            else "the local Kafka broker stopped answering (see: connector-recovery kafka status)"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    # Imported only once chosen: a module reads its sizes from the environment on import.
    module = importlib.import_module(f"bench.{args.name}")
    if args.name == "memory":
        result: dict[str, Any] = module.main(args.repeats, args.events, args.source)
    else:
        result = module.main(args.repeats)
    return result


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
