"""Conversion flows."""
