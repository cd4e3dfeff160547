"""The pipeline: what persists between runs (control numbers; later the store, queue, routing)."""
