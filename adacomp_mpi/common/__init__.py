"""Shared helpers for every layer above the codec: errors, atomic files, logging."""
