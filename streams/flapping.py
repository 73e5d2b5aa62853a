"""Nagios-style flap detection over a bit window (newest check in bit 0, 1 = healthy).

Percent state change = weighted count of transitions between consecutive checks divided by
the number of transitions a full window holds. Weights grow linearly from 0.8 (oldest
transition) to 1.2 (newest), so the newest change weighs 50% more than the oldest, as in
Nagios/Naemon. A window that is not yet full counts its missing transitions as unchanged.
"""

from __future__ import annotations


def push(bits: int, length: int, healthy: bool, window: int) -> tuple[int, int]:
    bits = ((bits << 1) | int(healthy)) & ((1 << window) - 1)
    return bits, min(length + 1, window)


def state_change_ratio(bits: int, length: int, window: int) -> float:
    transitions = (bits ^ (bits >> 1)) & ((1 << max(length - 1, 0)) - 1)
    if not transitions:
        return 0.0
    slots = window - 1
    total = 0.0
    position = 0  # 0 = newest transition
    while transitions:
        if transitions & 1:
            # weight 1.2 for the newest slot, 0.8 for the oldest
            total += 1.2 - 0.4 * position / (slots - 1) if slots > 1 else 1.0
        transitions >>= 1
        position += 1
    return total / slots
