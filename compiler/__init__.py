"""edgec: the user-facing orchestration (CLI, pipeline, report, gates)."""

__version__ = "0.1.0"
