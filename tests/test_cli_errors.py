"""Errors a person can act on, checked from outside (`connector-recovery` as a subprocess):
one line on stderr naming what is wrong and what to do, exit 2, before any Kafka I/O where
the input alone is wrong. No broker is needed: the bootstrap address is a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka.harness import free_port

EXIT_ERROR = 2


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from an empty folder, with its state under `tmp_path` and no broker."""
    folder = tmp_path / "cwd"
    folder.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "CR_LOCAL_DIR": str(tmp_path / "local"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        env=environment,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (["replay"], "--as-of", "yesterday"),
        (["replay"], "--since", "not-a-date"),
        (["verify"], "--until", "tomorrow"),
        (["report", "--format", "html"], "--since", "2026-13-01"),
        (["export", "--out", "audit.avro"], "--until", "soon"),
        (["silence", "SAP-AR"], "--until", "later"),
    ],
)
def test_a_bad_time_option_is_named_before_any_io(
    tmp_path: Path, command: list[str], option: str, value: str
) -> None:
    # The broker address is closed: an error about it would mean the time was read too late.
    line = one_line_error(cli(tmp_path, *command, option, value))
    assert line.startswith(f"error: {option}: not an ISO-8601 time: {value!r}")


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "--connector", "SAP-AR", "--status", "unhealthy"],
        ["replay"],
        ["verify"],
        ["report", "--format", "md"],
        ["export", "--out", "audit.avro"],
        ["ack", "SAP-AR:1", "--timeout", "5"],
        ["recover", "SAP-AR", "--timeout", "5"],
        ["silence", "SAP-AR", "--until", "2030-01-01T00:00:00Z", "--timeout", "5"],
        ["retire", "SAP-AR", "--timeout", "5"],
        ["worker"],
        ["simulate", "--seconds", "3"],
        ["demo"],
    ],
    ids=lambda command: command[0],
)
def test_no_broker_is_one_line_for_every_command_that_talks_to_kafka(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()
    result = cli(tmp_path, *command, KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    assert one_line_error(result) == (
        f"error: no Kafka broker at 127.0.0.1:{port} (start one with: connector-recovery kafka up)"
    )
    assert "Unclosed" not in result.stdout
    assert not list((tmp_path / "cwd").iterdir())  # nothing left in the folder it ran from


def test_a_policy_with_a_yaml_error_stops_the_worker_with_file_line_and_column(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults: {max_retries: 3\n")
    line = one_line_error(cli(tmp_path, "worker", "--policy", str(policy)))
    assert f"{policy}:2:1: not valid YAML" in line


def test_publish_documents_failure_as_free_text(tmp_path: Path) -> None:
    result = cli(tmp_path, "publish", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "free text (not a fixed set)" in help_text
    assert "only with --status unhealthy" in help_text


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["--status", "healthy", "--failure", "oops"], "failure 'oops' on a HEALTHY ping"),
        (["--status", "unhealthy", "--failure", " "], "failure is blank"),
        (["--status", "unhealthy", "--connector", " "], "connector_id: "),
        (["--status", "unhealthy", "--connector", "outage:x"], "may not start with 'outage:'"),
        (["--status", "unhealthy", "--dependency", " "], "dependency is blank"),
    ],
)
def test_publish_refuses_a_ping_the_schema_refuses_before_sending(
    tmp_path: Path, fields: list[str], expected: str
) -> None:
    line = one_line_error(cli(tmp_path, "publish", "--connector", "SAP-AR", *fields))
    assert expected in line


def test_publish_from_a_file_names_the_line_of_a_refused_ping(tmp_path: Path) -> None:
    pings = tmp_path / "pings.jsonl"
    pings.write_text(
        '{"connector_id": "SAP-AR", "status": "unhealthy", "failure": "timeout"}\n'
        '{"connector_id": "SAP-AR", "status": "healthy", "failure": "timeout"}\n'
    )
    line = one_line_error(cli(tmp_path, "publish", "--file", str(pings)))
    assert line.startswith(f"error: {pings}:2: failure 'timeout' on a HEALTHY ping")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--wrong-flag"], "--wrong-flag"),
        (["status", "--wrong-flag"], "--wrong-flag"),
        (["kafka", "sideways"], "sideways"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(
    tmp_path: Path, args: list[str], named: str
) -> None:
    line = one_line_error(cli(tmp_path, *args))
    assert named in line
    assert "--help" in line


def test_the_cli_says_its_version(tmp_path: Path) -> None:
    result = cli(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("connector-recovery ")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CR_STATES_CACHED", "many", "CR_STATES_CACHED must be a whole number, not 'many'"),
        ("CR_TICK_INTERVAL_S", "1s", "CR_TICK_INTERVAL_S must be a number of seconds, not '1s'"),
        (
            "CR_SESSION_TIMEOUT_S",
            "3600",
            "CR_SESSION_TIMEOUT_S must be between 6 and 1800 seconds, not 3600",
        ),
    ],
)
def test_a_setting_that_is_not_a_number_is_one_line(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    assert one_line_error(cli(tmp_path, "status", **{name: value})) == f"error: {says}"
