"""The package import rules (tests/tools/layers.py, docs/architecture.md "Packages") hold for
the code, and the checker does catch each kind of forbidden import."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import layers


def test_the_code_keeps_the_import_rules() -> None:
    assert [str(v) for v in layers.check()] == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for package in layers.OURS:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


GOOD = {
    "db/ledger.py": "import sqlalchemy\n",
    "metrics/rollup.py": "from db import ledger\n",
    "tasks/api.py": "from db.ledger import insert\n",
    "tasks/worker/__init__.py": "",
    "tasks/worker/runtime.py": "from tasks import api\nfrom . import api as same\n",
    "tasks/jobs/__init__.py": "",
    "tasks/jobs/system.py": "from metrics import rollup\n",
    "console/app.py": "import streamlit\nfrom tasks import api\nfrom metrics import rollup\n",
    "queuectl/cli.py": "from console import app\nfrom tasks.worker import runtime\n",
}


def test_a_tree_that_keeps_the_rules_passes(tmp_path: Path) -> None:
    assert layers.check(_tree(tmp_path, GOOD)) == []


@pytest.mark.parametrize(
    ("name", "source", "imported", "rule_says"),
    [
        ("tasks/cli.py", "from console import commands\n", "console", "tasks/ may import only"),
        ("db/ledger.py", "def f():\n    from tasks import api\n", "tasks.api", "nothing of ours"),
        ("metrics/read.py", "import tasks.api\n", "tasks.api", "metrics/ may import only"),
        ("tasks/api.py", "from metrics import rollup\n", "metrics.rollup", "only tasks.jobs"),
        ("console/x.py", "from tasks.worker import runtime\n", "tasks.worker.runtime", "public"),
        ("metrics/charts.py", "import pandas as pd\n", "pandas", "console library"),
        (
            "tasks/worker/pool.py",
            "from .. import api\nfrom ...console import app\n",
            "console.app",
            "tasks/ may import only",
        ),
    ],
)
def test_each_forbidden_import_is_reported(
    tmp_path: Path, name: str, source: str, imported: str, rule_says: str
) -> None:
    root = _tree(tmp_path, {**GOOD, name: source})
    [violation] = layers.check(root)
    assert (str(violation.path), violation.imported) == (name, imported)
    assert rule_says in violation.rule
