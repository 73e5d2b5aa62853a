"""The shell around the pure core: Kafka, Faust, HTTP, CLI."""
