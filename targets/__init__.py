"""edgec: targets."""
