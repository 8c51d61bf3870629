from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from tasks.errors import InvalidJobData, PayloadTooLarge
from tasks.payload import MAX_DEPTH, MAX_PAYLOAD_BYTES, cap_result, check_payload, loads_payload


class Point(BaseModel):
    x: int
    y: int = 0


@pytest.mark.parametrize("data", [[], "x", 1, None, 1.5, True])
def test_data_must_be_an_object(data: object) -> None:
    with pytest.raises(InvalidJobData, match="JSON object"):
        check_payload(data, None)


def test_schema_errors_name_the_field() -> None:
    with pytest.raises(InvalidJobData, match="x"):
        check_payload({"x": "not a number"}, Point)


def test_schema_output_is_normalized() -> None:
    assert check_payload({"x": 1}, Point) == {"x": 1, "y": 0}


def test_size_limit() -> None:
    check_payload({"s": "a" * (MAX_PAYLOAD_BYTES - 20)}, None)
    with pytest.raises(PayloadTooLarge, match="limit"):
        check_payload({"s": "a" * MAX_PAYLOAD_BYTES}, None)


def test_multibyte_text_counts_in_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        check_payload({"s": "é" * (MAX_PAYLOAD_BYTES // 2 + 10)}, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"a": float("nan")}, "NaN"),
        ({"a": 2**64}, "64 bits"),
        ({"a": "\x00"}, "NUL"),
        ({"a": "\ud800"}, "Unicode"),
        ({"a": {1, 2}}, "not a JSON value"),
        ({1: "a"}, "keys must be strings"),
    ],
)
def test_values_that_are_not_storable_json(data: dict, message: str) -> None:
    with pytest.raises(InvalidJobData, match=message):
        check_payload(data, None)


def test_depth_limit() -> None:
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(InvalidJobData, match="deeper"):
        check_payload(deep, None)


def test_json_text_is_refused_by_depth_before_it_is_parsed() -> None:
    deep = '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"  # json.loads: RecursionError
    with pytest.raises(InvalidJobData, match=f"nested deeper than {MAX_DEPTH} levels"):
        loads_payload(deep)
    edge = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert check_payload(loads_payload('{"x": ' + edge + "}"), None)
    with pytest.raises(InvalidJobData, match="deeper"):
        loads_payload('{"x": [' + edge + "]}")


def test_brackets_inside_strings_do_not_count() -> None:
    data = {"k[{": "[{" * 1000 + "\\", "q": '"[["', "n": [[1]]}
    text = json.dumps(data)  # escaped quotes and backslashes inside the strings
    assert '\\\\"' in text and '\\"[[' in text
    assert loads_payload(text) == data


def test_invalid_json_text_keeps_the_decoder_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_payload('{"x": ')


def test_results_are_capped() -> None:
    assert cap_result({"a": 1}) == {"a": 1}
    big = cap_result("x" * 100_000)
    assert big["truncated_result"] is True
    assert "unstorable_result" in cap_result({"a": float("nan")})


def test_a_result_with_a_nul_character_is_stored_as_a_note() -> None:
    """PostgreSQL's jsonb cannot store ``\\u0000``: such a result becomes a note on every
    ledger (in a value or a key, at any depth), and a literal backslash-u0000 text stays."""
    note = {"unstorable_result": "ValueError: the result contains a NUL character"}
    assert cap_result({"text": "a\x00b"}) == note
    assert cap_result({"rows": [{"k\x00": 1}]}) == note
    assert cap_result(["\\u0000 is how JSON writes it"]) == ["\\u0000 is how JSON writes it"]
