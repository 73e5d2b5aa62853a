"""The Alertmanager configuration docs/alertmanager.md offers is one Alertmanager accepts
(`amtool check-config`, from Debian's prometheus-alertmanager)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "alertmanager.md"


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool is not installed")
def test_the_documented_alertmanager_configuration_is_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    [config] = [block for block in blocks if block.startswith("global:")]
    path = tmp_path / "alertmanager.yml"
    path.write_text(config)
    checked = subprocess.run(
        ["amtool", "check-config", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 inhibit rules" in checked.stdout
