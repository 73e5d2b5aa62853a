"""A newcomer's first hour on a real broker: the worker runs from any folder."""

from __future__ import annotations

import pytest

from tests.kafka.harness import Namespace, Worker

pytestmark = pytest.mark.kafka


def test_the_worker_starts_from_an_empty_folder_without_a_data_dir(
    ns: Namespace, workers: list[Worker]
) -> None:
    empty = ns.tmp / "empty"
    empty.mkdir()
    home = ns.tmp / "home"  # no ~/.local/state yet: the worker creates it, parents included
    worker = Worker(
        ns, env={"HOME": str(home), "XDG_STATE_HOME": ""}, cwd=empty, default_data_dir=True
    )
    workers.append(worker)
    worker.start()  # fails unless it logs "ready"
    assert (home / ".local" / "state" / "connector-recovery" / ns.app_id).is_dir()
    assert not list(empty.iterdir())  # nothing written where it was started
