"""The demo: a simulated fleet and the guided run."""
