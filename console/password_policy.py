"""What a console password must be: at least ``MIN_LENGTH`` characters, not on the list of
common passwords, and not easy to guess.

The list and the estimate come from ``zxcvbn`` (its version locked in uv.lock): its 30,000 most
common passwords from leaked password sets (compared without case), and its guess estimate,
which also finds common passwords with a few changes, keyboard walks, repeats, dates and the
user's own name. ``MIN_SCORE`` 3 of its 0-4 scale means "safely unguessable" for an online
attack and well protected for an offline one (zxcvbn's wording)."""

from __future__ import annotations

from functools import lru_cache

from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

MIN_LENGTH = 12
MIN_SCORE = 3
_ESTIMATE_CHARS = 72  # zxcvbn refuses longer input; the first 72 characters decide
#: words anybody guessing a password of this system tries first
CONTEXT_WORDS = ("edurise", "queue", "queuectl", "console", "admin", "analyst")


class WeakPassword(ValueError):
    """The password does not meet the policy; the message says why."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def problem(password: str, username: str = "") -> str | None:
    """Why ``password`` is refused, or None when it is good enough."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if password.lower() in common_passwords():
        return "the password is on a list of common passwords"
    if username and password.lower() == username.lower():
        return "the password must not be the username"
    estimate = zxcvbn(password[:_ESTIMATE_CHARS], user_inputs=[username, *CONTEXT_WORDS])
    if int(estimate["score"]) < MIN_SCORE:
        warning = (estimate.get("feedback") or {}).get("warning") or "add more words"
        return f"the password is too easy to guess ({warning.rstrip('.')})"
    return None


def check(password: str, username: str = "") -> None:
    """Raise ``WeakPassword`` unless the password meets the policy."""
    reason = problem(password, username)
    if reason is not None:
        raise WeakPassword(reason)
