"""Which outage group a failing connector belongs to (docs/outages.md): pure, decided once
at detection and written on its `connector.failure.detected` as `group`."""

from __future__ import annotations

import hashlib

from streams.models import OUTAGE_KEY_PREFIX
from streams.policy import Policy

PLATFORM_TENANT = "_platform"  # as streams.projections.tenant_key
_MAX_GROUP = 200  # `outage:` + group stays well inside a connector id's 249 characters
_KEPT_PREFIX = 150
_TENANT_GROUP = "tenant:"


def group_of(
    connector_id: str,
    tenant_id: str | None,
    failure: str | None,
    dependency: str | None,
    policy: Policy,
) -> str:
    """The ping's own dependency, else the policy's (its globs), else tenant + failure."""
    if dependency is not None and dependency.strip():
        group = f"dependency:{dependency}"
    elif (named := policy.dependency_of(connector_id)) is not None:
        group = f"dependency:{named}"
    else:
        tenant = tenant_id if tenant_id is not None else PLATFORM_TENANT
        group = f"{_TENANT_GROUP}{tenant}/failure:{failure or 'unknown'}"
    if len(group) > _MAX_GROUP:  # free text from producers: kept distinct, and short
        digest = hashlib.sha256(group.encode()).hexdigest()[:16]
        group = f"{group[:_KEPT_PREFIX]}~{digest}"
    return group


def outage_key(group: str) -> str:
    """The outage's key: its id on the inputs topic, in the table and in the audit log."""
    return OUTAGE_KEY_PREFIX + group


def is_outage_key(key: str) -> bool:
    return key.startswith(OUTAGE_KEY_PREFIX)


def is_tenant_group(group: str) -> bool:
    """A group of one tenant's connectors (no dependency named): its outages are that
    tenant's. A dependency's may span tenants: its outages are the platform's."""
    return group.startswith(_TENANT_GROUP)
