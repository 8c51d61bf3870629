from __future__ import annotations

import pickle
import uuid

import pytest

from tasks.broker import ForgedMessage, JobMessageSerializer, decode_job_id, encode_job_message


def test_round_trip() -> None:
    job_id = uuid.uuid4()
    assert decode_job_id(encode_job_message(job_id, 3.0)) == job_id
    message = JobMessageSerializer().deserialize(encode_job_message(job_id, None))
    assert message.args == (str(job_id),)
    assert message.retries == 0


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"id": "x"}),
        b"{}",
        b'{"v": 1, "id": "not-a-uuid", "timeout": null}',
        b'{"v": 1, "id": "00000000-0000-0000-0000-000000000000", "timeout": -1}',
        b'{"v": 1, "id": "00000000-0000-0000-0000-000000000000", "timeout": null, "x": 1}',
        b"\xff\xfe",
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ForgedMessage):
        JobMessageSerializer().deserialize(data)
