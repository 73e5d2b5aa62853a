"""Avro on the wire: the single-object codec and the records between the wire and the core."""
