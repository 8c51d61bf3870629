"""Console commands for ``queuectl``: ``queuectl console`` and ``queuectl user ...``.

``queuectl/cli.py`` mounts ``user_app`` and calls ``run_console``; ``queuectl up`` calls
``ensure_admin`` once so a fresh system has someone who can log in.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from console import login_throttle
from console import passwords as auth
from db import console_sessions, users
from db.engine import engine_for, read, transaction
from db.settings import get_settings

log = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"
ADMIN_NAME = "admin"
ADMIN_PASSWORD_ENV = "QUEUE_ADMIN_PASSWORD"

user_app = typer.Typer(help="Manage console users.", no_args_is_help=True, add_completion=False)


def console_argv(port: int, address: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--browser.gatherUsageStats",
        "false",
    ]


def run_console(port: int, address: str = "127.0.0.1") -> None:
    """Replace this process with the Streamlit server of the console (signals reach it)."""
    argv = console_argv(port, address)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


class AdminPasswordRefused(ValueError):
    """``QUEUE_ADMIN_PASSWORD`` does not meet the password policy."""


def ensure_admin(engine: Engine) -> str | None:
    """With no console user at all, create ``admin`` (role admin).

    Its password comes from ``QUEUE_ADMIN_PASSWORD`` (it must meet the password policy, else
    ``AdminPasswordRefused``); without it one is generated and returned, so the caller can print it
    once, and the console makes the admin choose their own at the first login. Returns None
    when users already exist or the password came from the environment.
    """
    with read(engine) as conn:
        if users.count_users(conn) > 0:
            return None
    configured = os.environ.get(ADMIN_PASSWORD_ENV)
    password = configured or secrets.token_urlsafe(15)
    try:
        auth.create_user(engine, ADMIN_NAME, password, "admin", must_change_password=not configured)
    except IntegrityError:  # another process created it at the same moment
        return None
    except ValueError as exc:
        raise AdminPasswordRefused(f"{ADMIN_PASSWORD_ENV}: {exc}") from None
    log.info("created console user %r (role admin)", ADMIN_NAME)
    return None if configured else password


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _engine() -> Engine:
    return engine_for(get_settings().ledger_url)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise _fail("the password must not be empty")
    return password


@user_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(metavar="NAME", help="login name")],
    role: Annotated[str, typer.Option(help="admin or analyst")],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="read the password from the first line of stdin"),
    ] = False,
) -> None:
    """Add a console user (prompts for the password twice unless --password-stdin)."""
    if role not in users.ROLES:
        raise _fail(f"--role must be one of {', '.join(users.ROLES)}")
    password = _read_password(password_stdin)
    try:
        auth.create_user(_engine(), name, password, role)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except IntegrityError:
        raise _fail(f"user {name!r} already exists") from None
    except SQLAlchemyError as exc:
        raise _fail(f"database error: {str(exc).splitlines()[0]} (`queuectl migrate`?)") from None
    typer.echo(f"user {name} added with role {role}", err=True)


@user_app.command("list")
def list_users() -> None:
    """List console users."""
    with read(_engine()) as conn:
        rows = users.list_users(conn)
    for r in rows:
        state = "disabled" if r["disabled"] else "enabled"
        last = r["last_login_at"].isoformat() if r["last_login_at"] else "never"
        typer.echo(f"{r['username']:30} {r['role']:8} {state:9} last login {last}")


def _ended(count: int) -> str:
    return (
        f"{count} console session(s) ended: open tabs are logged out at their next action"
        " (a live-refreshing page within seconds)"
    )


def _set_disabled(name: str, disabled: bool) -> None:
    ended = 0
    with transaction(_engine()) as conn:
        found = users.set_disabled(conn, name, disabled)
        if disabled:  # signed-in tabs are logged out at their next action
            ended = console_sessions.end_all_of(conn, name)
    if not found:
        raise _fail(f"no user {name!r}")
    if disabled:
        typer.echo(f"user {name} disabled; {_ended(ended)}", err=True)
    else:
        typer.echo(f"user {name} enabled", err=True)


@user_app.command("disable")
def disable_user(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Disable a user: they can no longer log in, and their open sessions lose every right."""
    _set_disabled(name, True)


@user_app.command("enable")
def enable_user(name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Enable a disabled user again."""
    _set_disabled(name, False)


@user_app.command("passwd")
def set_password(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Set a user's password."""
    password = _read_password(password_stdin)
    try:
        new_hash = auth.hash_password(password, name)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    with transaction(_engine()) as conn:
        found = users.set_password_hash(conn, name, new_hash)
        ended = console_sessions.end_all_of(conn, name)
    if not found:
        raise _fail(f"no user {name!r}")
    typer.echo(f"password of {name} changed; {_ended(ended)}", err=True)


@user_app.command("unlock")
def unlock_user(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    client: Annotated[
        str | None,
        typer.Option(help="also clear this client address's count (every user it tried)"),
    ] = None,
) -> None:
    """Clear the login delay of a user at once (the failed attempts counted for them, from
    every address); with --client, also that address's."""
    try:
        cleared = login_throttle.unlock(_engine(), name, client)
    except SQLAlchemyError as exc:
        raise _fail(f"database error: {str(exc).splitlines()[0]} (`queuectl migrate`?)") from None
    typer.echo(f"user {name} unlocked ({cleared} login counter(s) cleared)", err=True)
