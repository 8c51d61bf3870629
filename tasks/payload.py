"""Checks on job payloads: JSON objects only, size- and depth-limited, schema-validated."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from tasks.errors import InvalidJobData, PayloadTooLarge

MAX_PAYLOAD_BYTES = 256 * 1024
#: levels of nesting a payload may have: the object is level 1, each value one level deeper
#: than its container (also checked on JSON text before it is parsed: ``loads_payload``)
MAX_DEPTH = 32
MAX_RESULT_BYTES = 64 * 1024
_INT_LIMIT = 2**63


def _walk(value: Any, depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        raise InvalidJobData(f"data is nested deeper than {MAX_DEPTH} levels (at {path})")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobData(f"object keys must be strings (at {path})")
            if "\x00" in key:
                raise InvalidJobData(f"object keys may not contain NUL characters (at {path})")
            _walk(item, depth + 1, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, depth + 1, f"{path}[{i}]")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise InvalidJobData(f"integers must fit in 64 bits (at {path})")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidJobData(f"NaN and infinity are not JSON (at {path})")
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidJobData(f"strings may not contain NUL characters (at {path})")
    else:
        raise InvalidJobData(f"{type(value).__name__} is not a JSON value (at {path})")


#: a JSON string (escapes included) or one bracket: brackets inside strings do not nest
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _too_deep(where: str) -> InvalidJobData:
    return InvalidJobData(f"data is nested deeper than {MAX_DEPTH} levels ({where})")


def loads_payload(text: str) -> Any:
    """Parse a payload's JSON text (``queuectl submit --data``, the console), refusing
    nesting deeper than ``MAX_DEPTH`` before the parser recurses into it. Malformed text
    raises ``json.JSONDecodeError`` as ``json.loads`` does."""
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(f"at character {token.start()}")
        elif bracket in ("]", "}"):
            depth -= 1
    try:
        return json.loads(text)
    except RecursionError:  # not reached after the scan; kept so no traceback ever escapes
        raise _too_deep("the parser ran out of stack") from None


def encode_payload(data: Any) -> str:
    """Compact JSON text of the data (what is measured against the size limit)."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")  # lone surrogates cannot be stored
        return text
    except UnicodeEncodeError as exc:
        raise InvalidJobData("data contains text that is not valid Unicode") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidJobData(f"data is not JSON-serializable: {exc}") from exc


def encoded_size(data: Any) -> int:
    return len(encode_payload(data).encode("utf-8"))


def check_payload(data: Any, schema: type[BaseModel] | None) -> dict[str, Any]:
    """Return the data to store (the schema's normalized dump) or raise ``InvalidJobData``."""
    return check_payload_text(data, schema)[0]


def check_payload_text(
    data: Any, schema: type[BaseModel] | None
) -> tuple[dict[str, Any], str | None]:
    """:func:`check_payload`, plus the stored data's JSON text when it was already encoded
    (no schema): bulk inserts send that text instead of encoding the payload again."""
    if not isinstance(data, dict):
        raise InvalidJobData(f"data must be a JSON object, got {type(data).__name__}")
    _walk(data, 1, "data")
    text = encode_payload(data)
    size = len(text.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"data is {size} bytes of JSON; the limit is {MAX_PAYLOAD_BYTES}")
    if schema is None:
        return data, text
    try:
        model = schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidJobData(f"data does not match the schema: {problems}") from None
    return model.model_dump(mode="json"), None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def cap_result(result: Any) -> Any:
    """A handler's return value as stored: JSON, at most MAX_RESULT_BYTES, else a note. A
    NUL character (which PostgreSQL's jsonb cannot store) gets a note on every ledger."""
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False, default=str)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        return {"unstorable_result": f"{type(exc).__name__}: {exc}"}
    if size > MAX_RESULT_BYTES:
        return {"truncated_result": True, "size_bytes": size, "preview": text[:1000]}
    stored = json.loads(text)
    if "\\u0000" in text and _has_nul(stored):  # the escape is in the text when a NUL is
        return {"unstorable_result": "ValueError: the result contains a NUL character"}
    return stored
