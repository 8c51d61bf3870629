"""``python -m bench <name> [args]``: run the benchmark ``bench/<name>.py`` (its ``main()``)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Modules of this folder that define ``main()`` (helpers such as ``harness`` do not)."""
    here = Path(__file__).parent
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if m.name != "__main__" and "\ndef main(" in (here / f"{m.name}.py").read_text()
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"usage: python -m bench <name> [args]; benchmarks: {', '.join(available())}")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in available():
        print(f"unknown benchmark {name!r}; benchmarks: {', '.join(available())}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    sys.argv = [f"bench {name}", *rest]
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
