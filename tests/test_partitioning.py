"""The project's own partitioner (agents/wire/partitioning.py) is Kafka's: equal to
aiokafka's murmur2 partitioner on any key."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from agents.wire.partitioning import partition_of


@given(st.binary(max_size=300), st.integers(1, 64))
def test_a_key_goes_where_aiokafka_sends_it(key: bytes, partitions: int) -> None:
    assert partition_of(key, partitions) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % partitions


def test_known_keys() -> None:
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2)
    assert partition_of(b"21", 2**31 - 1) == (-973932308 & 0x7FFFFFFF) % (2**31 - 1)
    assert partition_of(b"abc", 2**31 - 1) == (479470107 & 0x7FFFFFFF) % (2**31 - 1)
