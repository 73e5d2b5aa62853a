"""A long fold of the audit topic into the live views, in a process of its own
(agents/audit/child_fold.py): the view it leaves is the view this process folds, timelines
included; when the child fails the follower folds itself; a follower stopped meanwhile
leaves no child and no snapshot of half a fold."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from agents.audit.follow import AuditFollower
from agents.settings import Settings
from tests.core.test_views import differences
from tests.kafka.harness import Namespace, run
from tests.kafka.test_long_history import history, publish

pytestmark = pytest.mark.kafka

CHILD = "agents.audit.child_fold"


async def follow_until_caught_up(settings: Settings, views_dir: Path) -> AuditFollower:
    follower = AuditFollower(settings, views_dir)
    following = asyncio.create_task(follower.run())
    try:
        await asyncio.wait_for(follower.caught_up.wait(), 120)
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
    return follower


def children() -> list[int]:
    """This process's children that fold the views."""
    found = []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and CHILD.encode() in (process / "cmdline").read_bytes():
                found.append(int(process.name))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


@pytest.fixture(scope="module")
def published(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Namespace:
    ns = Namespace(kafka, tmp_path_factory.mktemp("child-fold"))
    run(publish(ns, history()))
    return ns


def test_the_view_a_child_folds_is_the_view_folded_here(
    published: Namespace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = published.settings()
    caplog.set_level(logging.INFO, "connector_recovery.views")
    here = run(follow_until_caught_up(settings.but(views_fold_in_child_from=0), tmp_path / "a"))
    apart = run(follow_until_caught_up(settings.but(views_fold_in_child_from=1), tmp_path / "b"))
    assert "folding in a process of their own" in caplog.text
    assert apart.progress.restored_events == here.view.events > 0  # the child's snapshot
    assert differences(apart.view, here.view) == []
    for connector in ("HIST-0000", "HIST-0001", "HIST-0599"):
        assert apart.timeline_positions(connector, 100) == here.timeline_positions(connector, 100)
        assert apart.timeline_positions(connector, 100)


def test_when_the_child_fails_the_follower_folds_itself(
    published: Namespace,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = published.settings()
    here = run(follow_until_caught_up(settings.but(views_fold_in_child_from=0), tmp_path / "a"))
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 at once
    apart = run(follow_until_caught_up(settings.but(views_fold_in_child_from=1), tmp_path / "b"))
    assert "the fold's own process exited with code 1" in caplog.text
    assert apart.progress.restored_events == 0
    assert apart.progress.read == here.progress.read
    assert differences(apart.view, here.view) == []


def test_a_follower_stopped_while_its_child_folds_leaves_neither_child_nor_snapshot(
    published: Namespace, tmp_path: Path
) -> None:
    settings = published.settings().but(views_fold_in_child_from=1)
    follower = AuditFollower(settings, tmp_path / "views")

    async def stop_while_folding() -> None:
        following = asyncio.create_task(follower.run())
        deadline = time.monotonic() + 30
        while not children():
            assert time.monotonic() < deadline, "no child started"
            await asyncio.sleep(0.01)
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)

    run(stop_while_folding())
    assert children() == []
    assert not follower.caught_up.is_set()
    assert not (tmp_path / "views" / "views.snapshot").exists()
