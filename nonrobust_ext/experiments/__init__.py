"""End-to-end jobs composed from the library (for now: the attack demo)."""
