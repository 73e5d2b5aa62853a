"""The documented example policy loads, and bad policies fail at start-up with the path."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.policyfile import load_policy
from streams.policy import PolicyError, parse_policy, policy_from_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"


def test_the_example_policy_is_valid() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.for_connector("SAP-AR").max_retries == 5
    assert policy.for_connector("SAP-AR").recovery_action.type == "kafka_connect"
    assert policy.for_connector("OTHER").max_retries == 3
    assert policy.expected_connectors == ("SAP-AR", "SFDC-CRM")
    assert policy.dependency_of("SAP-AR") == "sap-prod"
    assert policy.dependency_of("SFDC-CRM") == "crm-eu"
    assert policy.may_act("alice")
    assert not policy.may_act("mallory")


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ("defaults: {max_retrys: 3}", "defaults.max_retrys"),
        ("defaults: {backoff: {base_s: -1}}", "defaults.backoff.base_s"),
        ("connectors: {SAP-AR: {attempt_timeout_s: soon}}", "connectors.SAP-AR.attempt_timeout_s"),
        ("defaults: {recovery_action: {type: ftp}}", "defaults.recovery_action"),
        ("tenants: {acme: {webhook: not-a-url}}", "tenants.acme.webhook"),
        ("escalation: [{after_s: 60, target: {}}, {after_s: 30, target: {}}]", "escalation.1"),
        ("dependencies: {'sap prod': {connectors: [SAP-*]}}", "dependencies.sap prod"),
        ("dependencies: {sap-prod: {connectors: []}}", "dependencies.sap-prod.connectors"),
        ("dependencies: {sap-prod: {connectors: ['']}}", "dependencies.sap-prod.connectors.0"),
        ("dependencies: {sap-prod: {globs: [SAP-*]}}", "dependencies.sap-prod.globs"),
        ("outages: {min_connectors: 1}", "outages.min_connectors"),
        ("outages: {window_s: 0}", "outages.window_s"),
        ("outages: {release_per_s: .inf}", "outages.release_per_s"),
        ("outages: {min_conectors: 3}", "outages.min_conectors"),
    ],
)
def test_bad_policies_name_the_key(document: str, path: str) -> None:
    with pytest.raises(PolicyError, match=path.replace(".", r"\.")):
        policy_from_yaml(document)


@pytest.mark.parametrize(
    ("document", "hint"),
    [
        (
            "dashboard: {users: {alice: {token: s3cret}}}",
            "alice.token: Extra inputs are not"
            " permitted (did you mean token_sha256? the token's SHA-256: printf %s",
        ),
        (
            "defaults: {max_retrys: 3}",
            "defaults.max_retrys: Extra inputs are not permitted (did you mean max_retries?)",
        ),
        ("connectors: {SAP-AR: {atempt_timeout_s: 5}}", "(did you mean attempt_timeout_s?)"),
        (
            "dashboard: {user: {alice: {}}}",
            "dashboard.user: Extra inputs are not permitted (did you mean users?)",
        ),
        ("dashboard: {users: {bob: {tenant_id: acme}}}", "(did you mean tenant?)"),
        (
            "defaults: {recovery_action: {type: webhook, url: 'http://h', timout_s: 1}}",
            "(did you mean timeout_s?)",
        ),
    ],
)
def test_an_unknown_key_names_the_key_it_likely_meant(document: str, hint: str) -> None:
    with pytest.raises(PolicyError) as raised:
        policy_from_yaml(document)
    assert hint in str(raised.value)


def test_an_unknown_key_like_no_known_key_gets_no_guess() -> None:
    with pytest.raises(PolicyError) as raised:
        policy_from_yaml("dashboard: {colour: red}")
    assert str(raised.value) == "dashboard.colour: Extra inputs are not permitted"


def test_dependencies_match_connectors_by_glob_in_the_policys_order() -> None:
    policy = policy_from_yaml(
        "dependencies: {sap-prod: {connectors: [SAP-*]},"
        " crm-eu: {connectors: ['SFDC-?U', HUBSPOT]}}"
    )
    assert policy.dependency_of("SAP-AR") == "sap-prod"
    assert policy.dependency_of("SFDC-EU") == "crm-eu"
    assert policy.dependency_of("HUBSPOT") == "crm-eu"
    assert policy.dependency_of("sap-ar") is None  # globs are case-sensitive
    assert policy.dependency_of("NETSUITE") is None
    assert (policy.outages.min_connectors, policy.outages.window_s) == (5, 60.0)
    assert policy.outages.release_per_s == 20.0


def test_an_expected_connector_in_two_dependencies_is_refused() -> None:
    with pytest.raises(PolicyError, match="connector 'SAP-AR' matches a and b"):
        policy_from_yaml(
            "dependencies: {a: {connectors: [SAP-*]}, b: {connectors: ['*-AR']}}\n"
            "connectors: {SAP-AR: {}}"
        )


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "nope.yaml")


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_the_policy_loader_never_crashes(document: object) -> None:
    with contextlib.suppress(PolicyError):
        parse_policy(document)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_the_yaml_reader_never_crashes(text: str) -> None:
    with contextlib.suppress(PolicyError):
        policy_from_yaml(text)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  max_retries: 3\n  backoff: {base_s: 1\nadmins: [alice]\n")
    with pytest.raises(PolicyError) as raised:
        load_policy(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:4:7: not valid YAML: ")  # the ':' after `admins`
    assert "\n" not in message
    assert "<unicode string>" not in message
