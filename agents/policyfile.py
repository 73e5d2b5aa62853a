"""Reading the policy file (the shell's part; validation is the core's `streams.policy`)."""

from __future__ import annotations

from pathlib import Path

from streams.policy import Policy, PolicyError, parse_policy, policy_from_yaml


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return parse_policy({})
    try:
        text = path.read_text()
    except OSError as error:
        raise PolicyError(f"cannot read policy {path}: {error.strerror}") from None
    return policy_from_yaml(text, source=str(path))
