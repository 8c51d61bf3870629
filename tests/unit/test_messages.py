from __future__ import annotations

import pickle
import uuid

import pytest

from tasks.transport.broker import (
    ForgedMessage,
    JobMessageSerializer,
    decode_job_message,
    encode_job_message,
)


def test_round_trip() -> None:
    job_id = uuid.uuid4()
    assert decode_job_message(encode_job_message(job_id, 7, 3.0)) == (job_id, 7, 3.0)
    message = JobMessageSerializer().deserialize(encode_job_message(job_id, 1, None))
    assert message.args == (str(job_id), 1)
    assert JobMessageSerializer().serialize(message) == encode_job_message(job_id, 1, None)
    assert message.retries == 0


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"id": "x"}),
        b"{}",
        b'{"v": 2, "id": "not-a-uuid", "lease": 1, "timeout": null}',
        b'{"v": 2, "id": "00000000-0000-0000-0000-000000000000", "lease": 1, "timeout": -1}',
        b'{"v": 2, "id": "00000000-0000-0000-0000-000000000000", "lease": 0, "timeout": null}',
        b'{"v": 2, "id": "00000000-0000-0000-0000-000000000000", "lease": "1", "timeout": null}',
        b'{"v": 2, "id": "00000000-0000-0000-0000-000000000000", "lease": 1, "timeout": null, '
        b'"x": 1}',
        # a message of the first version (no lease): the reconciler sends the job again
        b'{"v": 1, "id": "00000000-0000-0000-0000-000000000000", "timeout": null}',
        # other spellings of an id: the delivery gate marks ids exactly as written, so only
        # the canonical one may run (a copy spelled otherwise would escape its mark)
        b'{"v": 2, "id": "0000000A-0000-0000-0000-000000000000", "lease": 1, "timeout": null}',
        b'{"v": 2, "id": "{00000000-0000-0000-0000-000000000000}", "lease": 1, "timeout": 1}',
        b'{"v": 2, "id": "00000000000000000000000000000000", "lease": 1, "timeout": null}',
        b'{"v": 2, "id": 5, "lease": 1, "timeout": null}',
        b"\xff\xfe",
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ForgedMessage):
        JobMessageSerializer().deserialize(data)
