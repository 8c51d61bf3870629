"""Small helpers shared by the console pages."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import streamlit as st

from console.actions import readable

#: label -> how far back (None: no lower bound)
TIME_RANGES: dict[str, timedelta | None] = {
    "Last 15 minutes": timedelta(minutes=15),
    "Last hour": timedelta(hours=1),
    "Last 6 hours": timedelta(hours=6),
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}


#: characters that start Markdown (or HTML) inside a line: emphasis, code, links and images,
#: autolinks and HTML, headings, tables, strikethrough, math, e-mail autolinks
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~$@])")
_MD_LIST_START = re.compile(r"^(\s*\d*)([-+.)])")


def md_text(value: object) -> str:
    """``value`` as Markdown source that renders as exactly its text: every character that
    could start Markdown or HTML is backslash-escaped (so no link, image, emphasis, heading,
    math or raw HTML), ``://`` and ``www.`` lose their autolink, and line breaks become spaces.

    For any text that did not come from the console itself (job data, errors, names, API
    messages that quote input) placed in an element that renders Markdown: ``st.error``,
    ``st.warning``, labels, ``st.metric`` values, ``st.table`` cells. Prefer ``st.text`` and
    ``st.code``, which never interpret anything."""
    text = " ".join(str(value).splitlines())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = text.replace("://", "\\://").replace("www.", "www\\.")
    return _MD_LIST_START.sub(r"\1\\\2", text)  # "- x", "+ x", "1. x", "1) x": not a list


def md_code(value: object) -> str:
    """``value`` as one Markdown code span: shown verbatim in a monospace font, nothing inside
    interpreted (line breaks become spaces)."""
    text = " ".join(str(value).splitlines()) or " "
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def job_href(job_id: object) -> str:
    """The URL of a job's page, relative to the Jobs page (works under any base path)."""
    return f"jobs?id={job_id}"


@contextmanager
def guard(what: str = "") -> Iterator[None]:
    """Show any error inside as one readable line (st.error), never a traceback. The message
    may quote input (a URL parameter, a queue name), so it is escaped (``md_text``).

    Streamlit's own control flow (st.stop, st.rerun) is a BaseException and passes through.
    """
    try:
        yield
    except Exception as exc:
        prefix = f"{what}: " if what else ""
        st.error(f"{prefix}{md_text(readable(exc))}")


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


#: session key of the sidebar's "Local times" switch (console/app.py)
LOCAL_TIMES = "ui_local_times"


def browser_zone() -> ZoneInfo | None:
    """The browser's time zone (``st.context.timezone``), None when it is unknown or not a
    zone this server knows."""
    try:
        name = st.context.timezone
    except Exception:  # no browser: AppTest, bare mode
        return None
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def display_zone() -> tzinfo:
    """The time zone every time is shown in: the browser's while the sidebar's *Local times*
    is on, else UTC."""
    if st.session_state.get(LOCAL_TIMES):
        zone = browser_zone()
        if zone is not None:
            return zone
    return UTC


def zone_label() -> str:
    """The displayed zone's name for column headers and help texts ("UTC", "Europe/Berlin")."""
    zone = display_zone()
    return "UTC" if zone is UTC else str(zone)


def fmt_time(value: datetime | None) -> str:
    """A time in the displayed zone, with its abbreviation ("2026-12-05 10:00:00 UTC", or
    "... CET" while *Local times* is on)."""
    if value is None:
        return "—"
    zone = display_zone()
    if zone is UTC:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt_seconds(seconds: float | None) -> str:
    """A duration in the unit that suits it; under 10 ms with decimals, so a short handler
    never shows as "0 ms"."""
    if seconds is None:
        return "—"
    if seconds <= 0:
        return "0 ms"
    if seconds < 0.00001:
        return "< 0.01 ms"
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_ago(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``value`` was, in words ("3 min ago", "in 2 h" for the future)."""
    if value is None:
        return "—"
    delta = ((now or datetime.now(UTC)) - value).total_seconds()
    ahead = delta < 0
    span = abs(delta)
    if span < 1:
        return "just now"
    size, unit = next(
        (size, unit)
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))
        if span >= size
    )
    amount = int(span // size)
    return f"in {amount} {unit}" if ahead else f"{amount} {unit} ago"


def fmt_when(value: datetime | None, now: datetime | None = None) -> str:
    """The absolute time (in the displayed zone) and how long ago it was."""
    if value is None:
        return "—"
    return f"{fmt_time(value)} ({fmt_ago(value, now)})"


def fmt_ms(ms: float | None) -> str:
    return "—" if ms is None else fmt_seconds(ms / 1000)


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def fmt_rate(per_second: float | None) -> str:
    if per_second is None:
        return "—"
    if per_second >= 1 or per_second == 0:
        return f"{per_second:.2f}/s"
    return f"{per_second * 60:.1f}/min"


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """A DataFrame of rows; UUIDs and JSON become text so Arrow can show them, and times are
    in the displayed zone (:func:`display_zone`)."""
    df = pd.DataFrame(rows, columns=columns) if columns else pd.DataFrame(rows)
    zone = display_zone()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.DatetimeTZDtype) and zone is not UTC:
            df[col] = df[col].dt.tz_convert(zone)  # *Local times*: the browser's zone
        elif df[col].dtype == object:
            df[col] = df[col].map(
                lambda v: (
                    str(v)
                    if isinstance(v, uuid.UUID)
                    else json.dumps(jsonable(v))
                    if isinstance(v, dict | list)
                    else v
                )
            )
    return df


def since_of(label: str, now: datetime | None = None) -> datetime | None:
    span = TIME_RANGES[label]
    if span is None:
        return None
    return (now or datetime.now(UTC)) - span


def page_header(title: str, caption: str | None = None) -> None:
    st.title(title)
    if caption:
        st.caption(caption)
