"""Which partition a key goes to: Kafka's default partitioner (the Java client's murmur2,
which aiokafka and librdkafka's `murmur2_random` follow), so every producer of the project,
whatever its client, and the worker agree on a connector's partition. Pure: the processor
imports it and no Kafka client (tests/test_partitioning.py holds it equal to aiokafka's)."""

from __future__ import annotations

from functools import lru_cache

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of `data`, as an unsigned 32-bit integer."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for start in range(0, length - length % 4, 4):
        k = int.from_bytes(data[start : start + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length - length % 4
    extra = length % 4
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=1 << 18)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for `key`. Cached: the router asks
    it of every ping, for a fleet of connectors that ping again and again."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
