"""The simulated network stack attached to uvmloan (depends on uvmloan, never the reverse)."""
