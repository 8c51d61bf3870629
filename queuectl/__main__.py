"""``python -m queuectl`` is the ``queuectl`` command."""

from __future__ import annotations

from queuectl.cli import main

main()
