"""Helpers for the course."""
