"""Names vulture (`vulture`, configured in pyproject.toml: 60% confidence) takes for dead
code, and who uses them where it cannot see. Run `vulture` after a change: it should print
nothing. Each line names the attribute once; the comment says who reads it."""

from types import SimpleNamespace

_ = SimpleNamespace()

# Libraries call these by name.
_.spinner  # agents/cli.py: Faust's Worker reads it (set to None: no spinner)
_.do_POST  # agents/demo/run.py: http.server's handler dispatch
_.log_message  # agents/demo/run.py: http.server's request log hook
_.on_partitions_assigned  # deliveries.py, router.py: aiokafka's rebalance listener
_._fetch_max_wait_ms  # agents/worker/faust_context.py: set on aiokafka's fetcher
_.daemon_threads  # tests/kafka/httpstub.py: socketserver reads it
_.model_config  # streams/models.py, streams/policy.py: pydantic's configuration
_._no_blank_id  # streams/models.py: a pydantic field validator
_._hysteresis  # streams/policy.py: a pydantic model validator
_.cls  # streams/models.py: a validator classmethod's first argument
_.pytestmark  # tests/**: pytest reads each module's marks
_.through_the_processor  # tests/worker/test_processor_rules.py: an autouse fixture
# tests/kafka/test_spec_scenarios.py: pytest-bdd steps, found by their decorators
_.a_connector_fails
_.the_retry_policy_executes
_.the_connector_recovers
_.a_recovery_receipt_is_recorded
_.retries_are_exhausted
_.the_platform_admin_intervenes
_.the_connector_is_recovered_manually
_.an_incident_is_logged

# streams/evidence.py: fields of the typed views are the keys of an event's attributes map;
# `write` and `read` walk them by position, and auditors read them in the log.
_.source_index
_.policy_sha256
_.state_change
_.threshold
_.duration_ms
_.trigger
_.position_at_recovery
_.resolution
_.recovery_event_id
_.targets
