"""Thin threaded socket drivers around the sans-IO protocol cores."""
