"""Submit (admins): a job type from the registry, JSON data checked before sending, priority,
queue, max attempts, an idempotency key, and when: now, at a UTC date-time, or after a delay.
Every field is checked before anything is sent and a refused value gets its message under its
field (``console.submit_form``); nothing is ever clamped or dropped silently. Shows the new
job's live status."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import streamlit as st

from console import actions, auth, data, submit_form, ui
from db.models import PRIORITY_MAX, PRIORITY_MIN
from db.states import TERMINAL, JobStatus
from tasks import api, registry
from tasks.errors import QueueError
from tasks.payload import loads_payload

#: the date widget takes any date: outside its own bounds Streamlit would silently keep the
#: previous date, so the bounds are wide and the job API's window check answers instead
ANY_DATE = (date(1900, 1, 1), date(9999, 12, 31))

auth.require_admin()
ss = st.session_state
ui.page_header("Submit", "Create a job through the job API. Every submission is audited.")


def example_data(schema: dict[str, Any] | None) -> str:
    """A skeleton of the data: defaults where the schema has them, empty values otherwise."""
    if not schema:
        return "{}"
    blank = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    out: dict[str, Any] = {}
    props = schema.get("properties", {})
    for name in schema.get("required", list(props)):
        spec = props.get(name, {})
        if "default" in spec:
            out[name] = spec["default"]
        elif spec.get("examples"):
            out[name] = spec["examples"][0]
        else:
            out[name] = blank.get(spec.get("type", "string"))
    return json.dumps(out, indent=2)


def _apply_type_defaults() -> None:
    jt = registry.get(ss["submit_type"])
    ss["submit_priority"] = jt.priority
    ss["submit_queue"] = jt.queue
    ss["submit_max_attempts"] = jt.max_attempts
    ss["submit_data"] = example_data(jt.json_schema())


types: list[registry.JobType] = []
with ui.guard("Job types"):
    types = data.job_types()
if not types:
    st.warning("No job types are registered (check QUEUE_JOB_MODULES).")
    st.stop()

names = [t.name for t in types]
if ss.get("submit_type") not in names:
    ss["submit_type"] = names[0]
    _apply_type_defaults()
later = datetime.now(UTC) + timedelta(minutes=5)
ss.setdefault("submit_date", later.date())
ss.setdefault("submit_time", later.time().replace(second=0, microsecond=0))

type_name = st.selectbox("Job type", names, key="submit_type", on_change=_apply_type_defaults)
jt = registry.get(type_name)
st.caption(
    f"{jt.description or 'No description.'}  \n"
    f"Default queue **{jt.queue}**, priority **{jt.priority}**, "
    f"{jt.max_attempts} attempt(s), timeout {ui.fmt_seconds(jt.timeout)}"
    + (f", periodic ({jt.schedule.describe()})" if jt.schedule else "")
)
with st.expander("JSON schema of the data", expanded=False):
    schema = jt.json_schema()
    if schema is None:
        st.caption("No schema: any JSON object is accepted.")
    else:
        st.json(schema)

with st.form("submit_job"):
    payload_text = st.text_area("Data (JSON object)", key="submit_data", height=180)
    notes: dict[str, Any] = {"data": st.empty()}
    c1, c2, c3 = st.columns(3)
    # no min/max on the number fields: an out-of-range value is kept and refused with a
    # message under its field (a bounded field would only turn red and submit nothing)
    priority = c1.number_input(
        f"Priority ({PRIORITY_MIN}-{PRIORITY_MAX}, higher runs first)",
        step=1,
        key="submit_priority",
    )
    notes["priority"] = c1.empty()
    queue = c2.text_input(
        "Queue", key="submit_queue", help="Declared queues: " + ", ".join(api.declared_queues())
    )
    notes["queue"] = c2.empty()
    max_attempts = c3.number_input(
        f"Max attempts (1-{api.MAX_ATTEMPTS_LIMIT})", step=1, key="submit_max_attempts"
    )
    notes["max_attempts"] = c3.empty()
    idempotency_key = st.text_input(
        "Idempotency key (optional)",
        key="submit_key",
        help="While a job with this key is not finished, submitting the same type and data "
        "with it returns that job instead of a new one; other data is refused.",
    )
    notes["key"] = st.empty()
    when = st.radio("When", submit_form.WHEN, key="submit_when", horizontal=True)
    d1, d2, d3 = st.columns(3)
    day = d1.date_input(
        "Date (UTC)", key="submit_date", min_value=ANY_DATE[0], max_value=ANY_DATE[1]
    )
    notes["date"] = d1.empty()
    clock = d2.time_input("Time (UTC)", key="submit_time", step=60)
    delay = d3.number_input("Delay (seconds)", value=60.0, step=1.0, key="submit_delay")
    notes["delay"] = d3.empty()
    st.caption(
        f"A job may be scheduled from {api.SCHEDULE_MAX_PAST.days} day before now to"
        f" {api.SCHEDULE_MAX_AHEAD.days} days (ten years) after now."
    )
    submitted = st.form_submit_button("Submit job", type="primary")


def _refuse(found: dict[str, str]) -> None:
    """Each message under its field, and one line saying nothing was submitted (a refusal
    about no field in particular, such as a denied action, is that one line)."""
    fields = {f: m for f, m in found.items() if f in notes}
    for field, message in fields.items():
        notes[field].error(ui.md_text(message))
    for field, message in found.items():
        if field not in notes:
            st.error(ui.md_text(message))
    if fields:
        st.error(f"Nothing submitted: {len(fields)} field(s) need a change (see above).")


if submitted:
    fields = submit_form.Fields(
        priority=priority,
        queue=queue or "",
        max_attempts=max_attempts,
        key=idempotency_key or "",
        when=when,
        day=day if isinstance(day, date) else None,
        clock=clock,
        delay=delay,
    )
    found = submit_form.problems(fields)
    payload: Any = None
    try:
        payload = loads_payload(payload_text or "")
    except json.JSONDecodeError as exc:
        found = {"data": f"Invalid JSON: {exc}", **found}
    except QueueError as exc:  # nested deeper than a payload may be
        found = {"data": str(exc), **found}
    if found:
        _refuse(found)
    else:
        key = fields.key or None
        existing = data.live_job_with_key(key) if key else None
        try:
            job_id = actions.submit(
                type_name,
                payload,
                priority=int(priority),
                queue=fields.queue.strip() or None,
                schedule=submit_form.schedule_of(fields),
                max_attempts=int(max_attempts),
                idempotency_key=key,
            )
        except actions.ActionError as exc:
            cause = exc.cause if isinstance(exc, actions.ActionFailed) else None
            _refuse({submit_form.field_of(cause, when): str(exc)})
        else:
            ss["submit_last_job"] = job_id
            ss["submit_last_status"] = None
            if existing == job_id:
                st.info(
                    f"A job with this idempotency key is not finished yet: {job_id} "
                    "(nothing new was submitted)"
                )
            else:
                st.success(f"Submitted job {job_id}")

last = ss.get("submit_last_job")
if last:
    done = ss.get("submit_last_status") in TERMINAL

    @st.fragment(run_every=None if done else 1)
    def live_status() -> None:
        try:
            job = data.job(data.ledger_url(), last)
        except Exception as exc:
            st.error(actions.readable(exc))
            return
        status = job["status"]
        ss["submit_last_status"] = status
        st.subheader("Last submitted job")
        st.markdown(
            f"Job {ui.md_code(last)} · type {ui.md_code(job['type'])} · "
            f"queue {ui.md_code(job['queue'])}"
        )
        st.metric("Status", status)
        if job.get("progress") is not None and status == JobStatus.RUNNING:
            fraction = float(job["progress"])
            st.progress(min(1.0, max(0.0, fraction if fraction <= 1 else fraction / 100)))
        if status == JobStatus.SCHEDULED:
            st.caption(f"Due {ui.fmt_time(job['scheduled_at'])}")
        if job.get("last_error"):
            st.caption(f"Last error: {ui.md_text(job['last_error'])}")
        if status in TERMINAL:
            st.caption(f"Finished {ui.fmt_time(job.get('finished_at'))}")

    live_status()
