# The BDD scenarios of the spec (../shared/seed/ops-connector-failure-and-recovery.md),
# verbatim, run end to end against a real worker on a real Kafka broker.
Feature: Ops Connector Failure and Recovery
  Detect and recover from connector failures without data loss.

  Scenario: Connector recovers automatically
    Given a connector fails
    When the retry policy executes
    Then the connector recovers
    And a recovery receipt is recorded

  Scenario: Connector requires manual recovery
    Given a connector fails
    And retries are exhausted
    When the Platform Admin intervenes
    Then the connector is recovered manually
    And an incident is logged
