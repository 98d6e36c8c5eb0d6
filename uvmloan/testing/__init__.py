"""Hypothesis strategies and state machines for users of uvmloan."""
