"""Errors the console shows as they are: their message is written for the user."""

from __future__ import annotations


class ConsoleError(Exception):
    """Base of every console error with a readable message."""
