"""Utilities: `statemap.util.filter` holds the state filters."""

from . import filter as filter

__all__ = ["filter"]
