"""edgec: models."""
