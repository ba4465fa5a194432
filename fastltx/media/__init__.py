"""Media in and out through PyAV (imported lazily: the models never need it)."""
