"""``queuectl``: run workers and the maintainer, and manage jobs from a shell.

Errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from console.commands import user_app
from db.settings import get_settings
from db.states import TERMINAL
from tasks import api
from tasks.errors import QueueError
from tasks.payload import loads_payload

app = typer.Typer(
    help="EduRise Queue: PostgreSQL-ledger job queue with Huey workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _configure_logging() -> None:
    settings = get_settings()
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    )
    if level > logging.DEBUG:  # Huey logs every task at INFO: ~30 % of the drain rate
        logging.getLogger("huey").setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class _Guard:
    """Turn API and database errors into one line on stderr and exit code 2."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None:
            return False
        if isinstance(exc, QueueError):
            raise _fail(str(exc))
        if isinstance(exc, SQLAlchemyError):
            first = str(exc).splitlines()[0]
            raise _fail(f"database error: {first} (is the ledger migrated? `queuectl migrate`)")
        return False


# `queuectl` is the composition root: it is the one place in tasks/ that reaches the console
# (user management and starting Streamlit); nothing else in tasks/ imports console/.
app.add_typer(user_app, name="user", help="Manage console users (admin / analyst).")


@app.command()
def console(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port")] = 8501,
    address: Annotated[
        str, typer.Option(help="interface to listen on; 0.0.0.0 for all (containers)")
    ] = "127.0.0.1",
) -> None:
    """Run the Streamlit console (replaces this process)."""
    from console.commands import AdminPasswordRefused, ensure_admin, run_console
    from db.engine import engine_for

    _configure_logging()
    with _Guard():
        try:
            password = ensure_admin(engine_for(get_settings().ledger_url))
        except AdminPasswordRefused as exc:
            raise _fail(str(exc)) from None
    if password:
        typer.echo(f"created console user 'admin' with password: {password}", err=True)
    run_console(port, address)


@app.command("metrics-server")
def metrics_server(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port of /metrics")] = 9464,
    host: Annotated[
        str, typer.Option(help="address to listen on (0.0.0.0 in containers)")
    ] = "127.0.0.1",
) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until SIGTERM or Ctrl-C."""
    from metrics.prometheus import serve

    _configure_logging()
    with _Guard():
        serve(port, host=host)


@app.command()
def migrate() -> None:
    """Create or upgrade the ledger tables (Alembic upgrade head)."""
    from db.engine import engine_for
    from db.migrate import upgrade

    _configure_logging()
    with _Guard():
        upgrade(engine_for(get_settings().ledger_url))
    typer.echo("ledger is at the latest migration", err=True)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="comma-separated queues, in pop order")] = "",
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="worker slots")] = 4,
    kind: Annotated[str, typer.Option(help="thread or process")] = "thread",
) -> None:
    """Run a worker (a Huey consumer) until SIGTERM or Ctrl-C."""
    from tasks import registry
    from tasks.worker.runtime import run_worker

    _configure_logging()
    settings = get_settings()
    if kind not in ("thread", "process"):
        raise _fail("--kind must be thread or process")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in names if not registry.QUEUE_NAME.match(q)]
    if bad:
        raise _fail(f"invalid queue name {bad[0]!r}")
    with _Guard():
        names = [api.check_declared_queue(q) for q in names] or api.declared_queues()
    run_worker(settings, names, concurrency, kind)


@app.command()
def maintainer() -> None:
    """Run the maintainer (dispatcher, stager, reconciler, rescuer, periodic jobs)."""
    import signal

    from tasks.maintenance.maintainer import Maintainer

    _configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Maintainer(get_settings()).run(stop)


@app.command()
def up(
    concurrency: Annotated[int, typer.Option(min=1, max=256)] = 4,
    console: Annotated[bool, typer.Option(help="also start the console")] = True,
) -> None:
    """Migrate, then run a maintainer and a worker (and the console) until Ctrl-C."""
    from console.commands import AdminPasswordRefused
    from queuectl.supervisor import run_all

    _configure_logging()
    try:
        run_all(get_settings(), concurrency=concurrency, with_console=console)
    except AdminPasswordRefused as exc:
        raise _fail(str(exc)) from None


def _parse_data(data: str) -> Any:
    try:
        return loads_payload(data)
    except json.JSONDecodeError as exc:
        raise _fail(f"--data is not valid JSON: {exc}") from None
    except QueueError as exc:  # nested deeper than the payload limit
        raise _fail(str(exc)) from None


@app.command()
def submit(
    type: Annotated[str, typer.Argument(help="job type, e.g. demo.echo")],
    data: Annotated[str, typer.Option(help="JSON object")] = "{}",
    priority: Annotated[int | None, typer.Option(help="0..9, higher runs first")] = None,
    queue: Annotated[str | None, typer.Option()] = None,
    at: Annotated[str | None, typer.Option(help="ISO 8601 time with zone")] = None,
    delay: Annotated[float | None, typer.Option(help="seconds from now")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    max_attempts: Annotated[int | None, typer.Option()] = None,
    after: Annotated[
        list[str] | None,
        typer.Option("--after", metavar="ID", help="wait for this job first (repeatable)"),
    ] = None,
    on_dependency_failure: Annotated[
        str, typer.Option(help="a dependency that fails or is cancelled: cancel | run")
    ] = "cancel",
    partition: Annotated[
        str | None,
        typer.Option(help="fair share: the job's partition (types with partition_by only)"),
    ] = None,
) -> None:
    """Submit a job; prints its id alone on stdout."""
    payload = _parse_data(data)
    if at is not None and delay is not None:
        raise _fail("give --at or --delay, not both")
    schedule: Any = delay
    if at is not None:
        try:
            schedule = datetime.fromisoformat(at)
        except ValueError:
            raise _fail(f"--at {at!r} is not an ISO 8601 date-time") from None
    with _Guard():
        opts: dict[str, Any] = {
            "queue": queue,
            "idempotency_key": idempotency_key,
            "max_attempts": max_attempts,
            "partition": partition,
        }
        if after:
            opts.update(depends_on=after, on_dependency_failure=on_dependency_failure)
        if schedule is None:
            job_id = api.submit_job(type, payload, priority, **opts)
        else:
            job_id = api.schedule_job(type, payload, schedule, priority, **opts)
    typer.echo(str(job_id))


@app.command()
def jobs(
    status: Annotated[str | None, typer.Option()] = None,
    type: Annotated[str | None, typer.Option()] = None,
    queue: Annotated[str | None, typer.Option()] = None,
    search: Annotated[str | None, typer.Option(help="job id or text in the payload")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """List jobs, newest first."""
    with _Guard():
        rows = api.get_jobs(status=status, type=type, queue=queue, search=search, limit=limit)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(_jsonable(row)))
        return
    typer.echo(f"{'id':36}  {'status':10} {'pri':>3} {'att':>5}  {'queue':12} type")
    for r in rows:
        attempts = f"{r['attempt']}/{r['max_attempts']}"
        typer.echo(
            f"{r['id']!s:36}  {r['status']:10} {r['priority']:>3} {attempts:>5}  "
            f"{r['queue']:12} {r['type']}"
        )


@app.command()
def show(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="the job as one JSON object")] = False,
) -> None:
    """Show one job with its errors and result."""
    with _Guard():
        row = api.get_job(job_id)
    if as_json:
        typer.echo(json.dumps(_jsonable(row)))
        return
    for key, value in _jsonable(row).items():
        if key in ("errors", "depends_on", "dependents"):
            continue
        typer.echo(f"{key:20} {json.dumps(value) if isinstance(value, dict | list) else value}")
    for key in ("depends_on", "dependents"):
        for dep in row.get(key) or []:
            counted = f" (counted as {dep['resolved']})" if dep.get("resolved") else ""
            typer.echo(f"{key:20} {dep['id']} {dep['status']} {dep['type']}{counted}")
    for err in row["errors"] or []:
        typer.echo(f"\n-- attempt {err.get('attempt')} at {err.get('at')}: {err.get('error')}")
        if err.get("traceback"):
            typer.echo(err["traceback"].rstrip())


@app.command()
def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a job (a running job gets a cancel request)."""
    with _Guard():
        outcome = api.cancel_job(job_id)
        downstream = api.dependents_cancelled(job_id)
    typer.echo(f"{outcome}: {api.CANCEL_MESSAGES[outcome]}")
    if downstream:
        typer.echo(f"{downstream} waiting dependent job(s) cancelled with it")


@app.command()
def retry(job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Run a failed or cancelled job again."""
    with _Guard():
        revived = api.retry_job(job_id)
    typer.echo("queued")
    if revived:
        typer.echo(f"{revived} dependent job(s) it had cancelled are waiting for it again")


@app.command()
def pause(
    queue: Annotated[str, typer.Argument(help="queue to stop dispatching")],
    reason: Annotated[str | None, typer.Option(help="shown in the console")] = None,
) -> None:
    """Pause a queue: its jobs stay queued, running jobs finish. Survives restarts."""
    import getpass

    with _Guard():
        taken_back = api.pause_queue(queue, by=f"cli:{getpass.getuser()}", reason=reason)
    typer.echo(f"paused {queue} ({taken_back} dispatched job(s) taken back)")


@app.command()
def resume(queue: Annotated[str, typer.Argument(help="queue to dispatch again")]) -> None:
    """Resume a paused queue."""
    with _Guard():
        api.resume_queue(queue)
    typer.echo(f"resumed {queue}")


# --- periodic jobs (issue 20): list, pause, resume -------------------------------------------

periodic_app = typer.Typer(
    help="Periodic jobs: list them, pause or resume one (stored in the ledger, audited).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(periodic_app, name="periodic")


def _cli_user() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _audit_periodic(action: str, name: str, details: dict[str, Any]) -> None:
    """The CLI's pause and resume are audited like the console's (role ``cli``)."""
    from db import audit
    from db.engine import write

    with write(api.engine()) as conn:
        audit.record(
            conn,
            username=_cli_user(),
            role="cli",
            action=action,
            outcome="ok",
            target=name,
            details=details,
        )


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


@periodic_app.command("list")
def periodic_list(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Every periodic job: schedule, policies, paused or not, next tick, skipped ticks."""
    from tasks.steering import list_periodic

    with _Guard():
        rows = list_periodic()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(_jsonable(row)))
        return
    typer.echo(
        f"{'name':32} {'state':7} {'schedule':34} {'overlap':7} {'catch_up':8} "
        f"{'next tick (UTC)':19}  {'skipped':>7} {'missed':>6}  last skipped (UTC)"
    )
    for r in rows:
        state = "PAUSED" if r["paused"] else "active"
        typer.echo(
            f"{r['name']:32} {state:7} {r['schedule'] or '(not registered)':34} "
            f"{r['overlap'] or '-':7} {r['catch_up'] or '-':8} "
            f"{_when(None if r['paused'] else r['next_tick']):19}  "
            f"{r['skipped_count']:>7} {r['missed_count']:>6}  {_when(r['last_skipped_tick'])}"
        )
        if r["paused"]:
            reason = f": {r['reason']}" if r["reason"] else ""
            typer.echo(f"    paused by {r['paused_by'] or '?'} at {_when(r['paused_at'])}{reason}")


@periodic_app.command("pause")
def periodic_pause(
    name: Annotated[str, typer.Argument(help="the periodic job (its job type)")],
    reason: Annotated[str | None, typer.Option(help="shown in the console and the list")] = None,
) -> None:
    """Stop enqueuing a periodic job's ticks (runs already enqueued go on). Survives restarts."""
    from tasks.steering import pause_periodic

    with _Guard():
        changed = pause_periodic(name, by=_cli_user(), reason=reason)
        if changed:
            _audit_periodic("periodic_pause", name, {"reason": reason})
    typer.echo(f"paused periodic job {name}" if changed else f"{name} was paused already")


@periodic_app.command("resume")
def periodic_resume(
    name: Annotated[str, typer.Argument(help="the periodic job (its job type)")],
) -> None:
    """Enqueue a paused periodic job's ticks again, from its next tick (no catch-up)."""
    from tasks.steering import resume_periodic

    with _Guard():
        changed = resume_periodic(name)
        if changed:
            _audit_periodic("periodic_resume", name, {})
    typer.echo(f"resumed periodic job {name}" if changed else f"{name} was not paused")


@app.command()
def types() -> None:
    """List the registered job types."""
    from tasks import registry

    registry.load_job_modules(get_settings().job_modules)
    for t in registry.all_types():
        sched = f"  [{t.schedule.describe()}]" if t.schedule else ""
        typer.echo(
            f"{t.name:40} queue={t.queue:14} prio={t.priority} tries={t.max_attempts}{sched}"
        )


@app.command()
def stats() -> None:
    """Per-queue counts by status, oldest waiting job and live workers (JSON)."""
    with _Guard():
        typer.echo(json.dumps(_jsonable(api.get_queue_stats()), indent=2))


TERMINAL_STATUSES = {s.value for s in TERMINAL}


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    attempt: Annotated[int | None, typer.Option(help="only this attempt's lines")] = None,
    grep: Annotated[str | None, typer.Option(help="only lines containing this text")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="print new lines until the job ends")
    ] = False,
) -> None:
    """Show the lines a job's handler logged (ctx.log), oldest first."""
    after, last_look = 0, False
    with _Guard():
        while True:
            lines = api.job_logs(job_id, attempt=attempt, after=after, contains=grep)
            for line in lines:
                at = line["at"].strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
                typer.echo(f"{at} {line['level']:7} [attempt {line['attempt']}] {line['message']}")
            if lines:
                after = lines[-1]["id"]
            if len(lines) == 1000:
                continue  # a full page: read on at once
            if not follow or last_look:
                return
            # lines reach the ledger within a quarter second: one more look once it ended
            last_look = api.get_job(job_id)["status"] in TERMINAL_STATUSES
            time.sleep(0.5)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
