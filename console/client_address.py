"""The address of the browser behind a console session, for the login throttle.

Streamlit gives the peer address of the tab's connection (``st.context.ip_address``; None for
loopback and in AppTest, where it cannot be seeded). Behind a reverse proxy that peer is the
proxy, so every visitor would share one address: set ``QUEUE_CONSOLE_CLIENT_IP_HEADER`` to the
header the proxy sets (``X-Forwarded-For``, ``X-Real-IP``) and the last address in it, the one
the proxy itself appended, is used. Never set it without such a proxy: clients could then
choose their own address.
"""

from __future__ import annotations

from collections.abc import Mapping

from console.passwords import LOCAL_CLIENT, MAX_USERNAME
from console.settings import get_console_settings

MAX_ADDRESS = MAX_USERNAME


def from_request(
    ip: str | None, headers: Mapping[str, str] | None, trusted_header: str | None
) -> str:
    """The client address: the last entry of ``trusted_header`` when it is configured and
    present, else the connection's peer, else ``LOCAL_CLIENT``."""
    if trusted_header and headers is not None:
        value = headers.get(trusted_header)
        if isinstance(value, str) and value:
            last = value.split(",")[-1].strip()
            if last:
                return last[:MAX_ADDRESS]
    if not isinstance(ip, str) or not ip:  # AppTest's client is a mock
        return LOCAL_CLIENT
    return ip[:MAX_ADDRESS]


def current() -> str:
    """The address of the browser of the running Streamlit session."""
    import streamlit as st

    header = get_console_settings().queue_console_client_ip_header
    try:
        headers = st.context.headers if header else None
        ip = st.context.ip_address
    except Exception:  # no session context (bare scripts)
        return LOCAL_CLIENT
    return from_request(ip, headers, header)
