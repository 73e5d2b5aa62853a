"""The pure, deterministic core of connector-recovery.

Nothing in this package does I/O, reads a clock or draws random numbers: time arrives as
inputs (`Tick`, `checked_at`, `issued_at`), randomness is derived from hashes. The live
Faust agents and the replay tool call the very same functions.
"""
