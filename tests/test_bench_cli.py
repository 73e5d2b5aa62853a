"""`python -m bench` used wrongly, as a newcomer would: one line that says what to change,
exit 2, no traceback, before any work is done."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["-m", "bench", "nosuch"], {}, "invalid choice: 'nosuch'"),
        (["-m", "bench", "processor", "--repeats", "0"], {}, "--repeats: '0': give a number"),
        (["-m", "bench", "processor", "--repeats", "abc"], {}, "'abc' is not a whole number"),
        (["-m", "bench", "throughput"], {"CR_BENCH_PINGS": "abc"}, "CR_BENCH_PINGS='abc'"),
        (["-m", "bench", "latency"], {"CR_BENCH_SECONDS": "-5"}, "CR_BENCH_SECONDS='-5'"),
        (
            ["-m", "bench", "throughput", "--repeats", "1"],
            {"KAFKA_BOOTSTRAP_SERVERS": "localhost:1"},
            "no Kafka broker answers at localhost:1",
        ),
        (
            # quixstreams missing, as after a plain install (it is a dev dependency)
            [
                "-c",
                "import sys; sys.modules['quixstreams'] = None; "
                "from bench.__main__ import main; sys.exit(main(['peer']))",
            ],
            {},
            "bench peer needs quixstreams",
        ),
    ],
)
def test_a_wrong_use_is_one_line(args: list[str], env: dict[str, str], says: str) -> None:
    run = bench(*args, env=env)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("error: ")
    assert says in run.stderr
    assert run.stdout == ""
