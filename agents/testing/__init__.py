"""What the tests and the benchmarks both drive the system with: `driver` (the pure core,
one input at a time, time an input) and `kafka` (fresh topic names, topic readers, waits
on the real broker). Nothing here imports a test-only dependency (pytest, hypothesis), and
no module the worker runs imports this package (tests/test_rooms.py checks both), so
`bench/` needs no `tests/` on its path and the worker ships none of it."""
