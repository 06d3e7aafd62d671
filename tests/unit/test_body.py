import pytest

from pollybot_leads.errors import InvalidJson
from pollybot_leads.http.body import decode_json_object


def test_an_object_is_decoded():
    assert decode_json_object(b'{"a": [1, 2.5, null, true]}') == {"a": [1, 2.5, None, True]}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"  ",
        b"[]",
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"a":"\\udc00"}',
        b"\xc3\x28",
        b'{"a": 99999999999999999999}',
        b"[" * 5000,
    ],
)
def test_what_cannot_be_stored_is_invalid_json(raw):
    with pytest.raises(InvalidJson):
        decode_json_object(raw)
