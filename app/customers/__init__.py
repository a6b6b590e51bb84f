"""Customers: each one's purchase pattern, kept current as events are stored."""
