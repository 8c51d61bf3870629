"""Reaching the real services the tests need; a missing one skips locally, fails in CI."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

ADMIN_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)


def _own_redis_database(url: str) -> str:
    """Under pytest-xdist (``make test`` runs two workers) each worker process flushes its own
    Redis database: ``gw0`` the given one, ``gw1`` the one below it, and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    database = base - int(worker[2:])
    if database < 0:
        raise RuntimeError(f"TEST_REDIS_URL {url}: not enough Redis databases below it")
    return urlunsplit(parts._replace(path=f"/{database}"))


TEST_REDIS_URL = _own_redis_database(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": (
        'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'
    ),
}


def unavailable(service: str, url: str, error: Exception) -> None:
    message = (
        f"{service} is not reachable at {url} ({error}). Start it with: {HOW_TO_START[service]}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI requires every service: {message}", pytrace=False)
    pytest.skip(message)


def conninfo(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


def create_database() -> str:
    """A fresh, empty PostgreSQL database for this test session; returns its URL."""
    try:
        admin = psycopg.connect(conninfo(ADMIN_DATABASE_URL), autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        unavailable("PostgreSQL", ADMIN_DATABASE_URL, exc)
        raise
    name = f"edurise_test_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return make_url(ADMIN_DATABASE_URL).set(database=name).render_as_string(False)


def drop_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(conninfo(ADMIN_DATABASE_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", TEST_REDIS_URL, exc)
    return client
