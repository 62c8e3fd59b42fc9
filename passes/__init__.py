"""edgec: passes."""
