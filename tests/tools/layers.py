"""The import rules of the packages (docs/architecture.md, "Packages"), checked from the code.

Run ``python -m tests.tools.layers`` (exit status 1 and one line per forbidden import) or the
pytest ``tests/unit/test_layers.py``. Every ``import`` counts, at module level or inside a
function: a deferred import is still an edge of the design.

The layers, bottom up; each package may import only the ones below it:

- ``db``: the ledger (models, migrations, every state transition's SQL). Imports nothing of ours.
- ``metrics``: rollups and read models over the ledger. Imports ``db``.
- ``tasks``: the job API, job types, transport, worker, maintainer. Imports ``db``; only the
  job types that compute or watch metrics (``tasks.jobs``, ``tasks.alerts``) import ``metrics``.
- ``console``: the Streamlit app. Imports ``db``, ``metrics`` and the public surface of
  ``tasks`` (:data:`TASKS_PUBLIC`), never the worker or the transport.
- ``queuectl``: the composition root (the command line and the supervisor); imports anything.

And the console's libraries (streamlit, pandas, plotly) are imported only by ``console``:
the worker image does not carry them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: package -> the packages of ours it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "db": frozenset(),
    "metrics": frozenset({"db"}),
    "tasks": frozenset({"db", "metrics"}),
    "console": frozenset({"db", "metrics", "tasks"}),
    "queuectl": frozenset({"db", "metrics", "tasks", "console"}),
}
OURS = frozenset(ALLOWED)

#: the only parts of ``tasks`` that may import ``metrics``
TASKS_USING_METRICS = ("tasks.jobs", "tasks.alerts")

#: what the console may import from ``tasks``: the job API and what it names
TASKS_PUBLIC = (
    "tasks.api",
    "tasks.errors",
    "tasks.payload",
    "tasks.registry",
    "tasks.steering",
    "tasks.workflows",
    "tasks.alerts.rules",
    "tasks.alerts.settings",
)

#: third-party packages only the console may import
CONSOLE_LIBRARIES = frozenset({"streamlit", "pandas", "plotly"})


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.rule}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(root: Path, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in ``path``; ``from a import b`` names
    ``a.b`` when that is a module of ours, else ``a``."""
    module = _module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield node.lineno, candidate if _is_module(root, candidate) else source


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def rule_broken(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""
    own, top = importer.split(".")[0], imported.split(".")[0]
    if top in CONSOLE_LIBRARIES and own in OURS and own != "console":
        return f"{top} is a console library; only console/ may import it"
    if top not in OURS or top == own or own not in OURS:
        return None
    if top not in ALLOWED[own]:
        return f"{own}/ may import only {sorted(ALLOWED[own]) or 'nothing of ours'}"
    if own == "tasks" and top == "metrics" and not _within(importer, TASKS_USING_METRICS):
        return f"in tasks/ only {', '.join(TASKS_USING_METRICS)} may import metrics"
    if own == "console" and top == "tasks" and not _within(imported, TASKS_PUBLIC):
        return f"console/ may import only the public surface of tasks: {', '.join(TASKS_PUBLIC)}"
    return None


def check(root: Path = ROOT) -> list[Violation]:
    found: list[Violation] = []
    for package in sorted(OURS):
        for path in sorted((root / package).rglob("*.py")):
            importer = _module_name(root, path)
            for line, imported in imports_of(root, path):
                rule = rule_broken(importer, imported)
                if rule is not None:
                    found.append(Violation(path.relative_to(root), line, importer, imported, rule))
    return found


def main() -> int:
    violations = check()
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} forbidden import(s)", file=sys.stderr)
        return 1
    print(f"import rules hold for {', '.join(sorted(OURS))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
