"""The worker: Faust wiring around the core, router, clock, repair, effects, live views."""
