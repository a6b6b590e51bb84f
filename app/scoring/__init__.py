"""Scoring: the pure mathematics of who is drifting away. No HTTP, no SQL."""
