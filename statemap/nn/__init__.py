"""Modules: objects that own states and sub-modules, with paths for filters."""

from ._module import Module as Module

__all__ = ["Module"]
