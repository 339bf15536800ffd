"""Adapters, one external system each; they translate foreign errors into tasks.errors."""
