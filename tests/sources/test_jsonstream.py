import io
import json

import pytest

from pipelines.sources import SourceError
from pipelines.sources.jsonstream import iter_json_array, iter_json_object

ELEMENTS = [
    {"id": 1, "phrase": "a café with crème brûlée", "emoji": "🐱🐶", "x": 12.5},
    12345678901234567890123456789,
    1.5e-300,
    -0.25,
    "中文字符串",
    None,
    True,
    False,
    [],
    {},
    [1, [2, [3, {"deep": "ä" * 50}]]],
    "escapes \" \\ \n \t \u00e9 \U0001f600",
]


class CountingStream(io.BytesIO):
    """Records how many bytes were asked for: proves the decoder does not read the file whole."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def elements(data: bytes, chunk_size: int) -> list:
    return [value for _, value in iter_json_array(io.BytesIO(data), "f.json", chunk_size)]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent, ascii", [(None, False), (2, False), (None, True)])
def test_elements_straddling_chunks_decode_exactly(chunk_size, indent, ascii):
    data = json.dumps(ELEMENTS, indent=indent, ensure_ascii=ascii).encode("utf-8")
    assert elements(data, chunk_size) == ELEMENTS


def test_indices_count_from_zero():
    data = b'[ "a" ,\r\n\t"b",  "c" ]  \n'
    assert list(iter_json_array(io.BytesIO(data), "f.json", 2)) == [(0, "a"), (1, "b"), (2, "c")]


@pytest.mark.parametrize("data", [b"[]", b"  [ \n ]\n", b"\xef\xbb\xbf[]"])
def test_empty_array(data):
    assert elements(data, 1) == []


def test_byte_order_mark_is_skipped():
    assert elements(b"\xef\xbb\xbf[1, 2]", 1) == [1, 2]


def test_element_much_larger_than_chunk():
    big = {"text": "x" * 20000, "n": list(range(500))}
    data = json.dumps([1, big, 2]).encode()
    assert elements(data, 7) == [1, big, 2]


def test_streams_instead_of_reading_whole():
    data = json.dumps([{"i": i, "pad": "p" * 100} for i in range(1000)]).encode()
    stream = CountingStream(data)
    iterator = iter_json_array(stream, "f.json", 256)
    assert next(iterator) == (0, {"i": 0, "pad": "p" * 100})
    assert stream.consumed < 1024
    assert sum(1 for _ in iterator) == 999


def test_object_members_stream_arrays_element_by_element():
    data = json.dumps(
        {"info": {"v": 1}, "images": [{"id": 1}, {"id": 2}], "empty": [], "annotations": [{"id": 9}]}
    ).encode()
    members = list(iter_json_object(io.BytesIO(data), "f.json", 3))
    assert members == [
        ("info", None, {"v": 1}),
        ("images", 0, {"id": 1}),
        ("images", 1, {"id": 2}),
        ("empty", None, []),
        ("annotations", 0, {"id": 9}),
    ]
    assert list(iter_json_object(io.BytesIO(b" {} "), "f.json", 1)) == []


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"[1, 2,]", r"f\.json: not valid JSON: Expecting value at line 1 column 7 \(byte 6, in element 2\)"),
        (b"[1 2]", r"f\.json: .*expected ',' or '\]' .* line 1 column 4 \(byte 3, in element 0\)"),
        (b'{"a": 1}', r"f\.json: .*expected a JSON array at line 1 column 1 \(byte 0\)"),
        (b"", r"f\.json: .*expected a JSON array"),
        (b"[1, 2", r"f\.json: .*expected ',' or '\]'.*in element 1"),
        (b"[1] []", r"f\.json: .*unexpected data after the end .* column 5 \(byte 4\)"),
        (b'[{"a": tru}]', r"f\.json: .*Expecting value at line 1 column 8 .*element 0"),
        (
            b'[1,\n  {"x": "a\nb"}]',
            r"f\.json: .*Invalid control character at line 2 column 11 \(byte 14, in element 1\)",
        ),
        (b'["\xc3\xa9", "\xff"]', r"f\.json: not valid UTF-8 at byte 8"),
        (b'["\xe4\xb8"]', r"f\.json: not valid UTF-8"),  # multi-byte character cut by the end of file
        (b'["unterminated', r"f\.json: .*Unterminated string"),
    ],
)
@pytest.mark.parametrize("chunk_size", [1, 4, 1 << 20])
def test_malformed_input_names_file_and_position(data, expected, chunk_size):
    with pytest.raises(SourceError, match=expected):
        list(iter_json_array(io.BytesIO(data), "f.json", chunk_size))


def test_error_after_many_chunks_counts_lines_columns_and_bytes():
    head = ",\n".join(json.dumps({"phrase": "é" * i}, ensure_ascii=False) for i in range(30))
    data = f"[{head},\n  {{bad}}]".encode()
    line, column = 31, 4
    offset = data.index(b"bad")
    pattern = rf"line {line} column {column} \(byte {offset}, in element 30\)"
    for chunk_size in (1, 3, 16, 1 << 20):
        with pytest.raises(SourceError, match=pattern):
            list(iter_json_array(io.BytesIO(data), "f.json", chunk_size))


def test_elements_before_an_error_are_yielded():
    iterator = iter_json_array(io.BytesIO(b'[1, 2, {"x": }]'), "f.json", 2)
    assert next(iterator) == (0, 1)
    assert next(iterator) == (1, 2)
    with pytest.raises(SourceError, match="element 2"):
        next(iterator)


def test_object_errors_name_member_and_element():
    data = b'{"images": [{"id": 1}, {"id": ]}'
    with pytest.raises(SourceError, match=r"element 1 of 'images'"):
        list(iter_json_object(io.BytesIO(data), "c.json", 4))
    with pytest.raises(SourceError, match="expected a JSON object"):
        list(iter_json_object(io.BytesIO(b"[]"), "c.json", 4))
    with pytest.raises(SourceError, match="expected ',' or '}'"):
        list(iter_json_object(io.BytesIO(b'{"a": 1 "b": 2}'), "c.json", 4))
