"""`python -m bench <name>`: run one benchmark, print a table, write bench/results/<name>.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import core, floor, latency, memory, peer, processor, replay, state, throughput

BENCHES = {
    "core": core.main,
    "replay": replay.main,
    "throughput": throughput.main,
    "latency": latency.main,
    "state": state.main,
    "floor": floor.main,
    "memory": memory.main,
    "peer": peer.main,
    "processor": processor.main,
}
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--events", type=int, help="memory: replay a log of this many events (no extrapolation)"
    )
    parser.add_argument(
        "--source", choices=("topic", "archive"), default="topic", help="memory: with --events"
    )
    args = parser.parse_args(argv)
    if args.name == "memory":
        result = memory.main(args.repeats, args.events, args.source)
    else:
        result = BENCHES[args.name](args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
