"""Kafka clients and topics: connection options, the local broker, topic set-up, publishing."""
