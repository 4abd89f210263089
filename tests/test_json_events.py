"""The strict streaming JSON reader import uses (json_events.py).

The point of most of these tests: ijson's C parser (yajl2_c) kills the whole
process with a segmentation fault when it meets an integer literal longer than
Python's int digit limit (4300), so the reader must refuse such a literal before
the parser sees it, wherever it is (deep in a large document, split between two
64 KB reads, read from a pipe), while digit runs that are not an integer's
digits (in a string, a fraction, an exponent) still import.  Imports that could
crash run in a subprocess: a crash there is a negative return code, not a
failed test run.
"""

import io
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zpydb
from zpydb import json_events
from zpydb.json_events import READ_SIZE, LongIntegerGuard

LIMIT = json_events.digit_limit()


# -- the guard against a reference, on random documents cut at random places -----------

SMALL = 5  # a small limit makes short random literals cross it


def _number():
    """(JSON number text, digits in its integer part)."""
    integer = st.integers(0, 9).flatmap(
        lambda length: st.just("0") if length == 0 else
        st.text("0123456789", min_size=length - 1, max_size=length - 1).map(lambda r: "7" + r))
    fraction = st.none() | st.text("0123456789", min_size=1, max_size=9)
    exponent = st.none() | st.tuples(st.sampled_from(["e", "E"]), st.sampled_from(["", "+", "-"]),
                                     st.text("0123456789", min_size=1, max_size=9))
    return st.tuples(st.booleans(), integer, fraction, exponent).map(
        lambda parts: ("-" if parts[0] else "") + parts[1]
        + ("" if parts[2] is None else "." + parts[2])
        + ("" if parts[3] is None else "".join(parts[3])))


def _string():
    return st.tuples(st.text('0123456789"\\/ab\u00e9\n', max_size=14), st.booleans()).map(
        lambda parts: json.dumps(parts[0], ensure_ascii=parts[1]))


def _document():
    leaf = _number() | _string() | st.sampled_from(["true", "null"])
    return st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]")
        | st.lists(st.tuples(_string(), inner), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"),
        max_leaves=12)


def _longest_integer_part(text):
    """The reference: the longest integer part among the document's numbers (json's parser)."""
    longest = [0]

    def number(token):
        digits = token.lstrip("-").split(".")[0].split("e")[0].split("E")[0]
        longest[0] = max(longest[0], len(digits))
        return 0
    json.loads(text, parse_int=number, parse_float=number)
    return longest[0]


def _feed(guard, data, cuts):
    pieces, start = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    for piece in pieces:
        guard.feed(piece)


@settings(max_examples=400, deadline=None)
@given(text=_document(), data=st.data())
def test_the_guard_refuses_exactly_the_long_integer_parts_however_the_input_is_cut(text, data):
    encoded = text.encode("utf-8")
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=8))
    refused = _longest_integer_part(text) > SMALL
    guard = LongIntegerGuard(SMALL)
    if refused:
        with pytest.raises(zpydb.Error, match=r'more than 5 digits before its decimal point'):
            _feed(guard, encoded, cuts)
    else:
        _feed(guard, encoded, cuts)


@pytest.mark.parametrize("text, refused", [
    ('[123456]', True), ('[-123456]', True), ('[123456.5]', True), ('[123456e2]', True),
    ('[12345]', False), ('[1.123456]', False), ('[1e123456]', False), ('[1E-123456]', False),
    ('[1e+123456]', False), ('["123456"]', False), ('["\\"123456"]', False),
    ('["\\\\", 123456]', True), ('["\\\\\\"", "123456"]', False), ('{"123456": 1}', False),
    ('["a\\u0031234567"]', False),
])
def test_the_guard_on_each_place_a_digit_run_can_be(text, refused):
    for cut in range(len(text) + 1):  # every split into two pieces, one byte at a time too
        for pieces in ([text[:cut], text[cut:]], list(text)):
            guard = LongIntegerGuard(SMALL)
            try:
                for piece in pieces:
                    guard.feed(piece.encode())
            except zpydb.Error:
                assert refused, (text, cut)
            else:
                assert not refused, (text, cut)


def test_the_guard_is_linear_in_a_run_just_under_the_limit():
    """Many runs of exactly the limit (allowed): scanning must not be quadratic in the run."""
    data = (("[" + ", ".join([str(7 * 10 ** (LIMIT - 1))] * 2000) + "]").encode())
    guard = LongIntegerGuard(LIMIT)
    for start in range(0, len(data), READ_SIZE):
        guard.feed(data[start:start + READ_SIZE])   # ~8.6 MB; a quadratic scan takes minutes


# -- the whole import, in a subprocess: refused or imported, never a crash -------------

def _import(tmp_path, document, path="db['x']", stdin=False):
    """Import ``document`` (bytes) into a new file database in another process."""
    (tmp_path / "in.json").write_bytes(document)
    target = str(tmp_path / "t.fs")
    args = [sys.executable, "-m", "zpydb", "import", "--no-progress",
            "-" if stdin else str(tmp_path / "in.json"), target, "--path", path]
    result = subprocess.run(args, capture_output=True, timeout=300,
                            input=document if stdin else None)
    assert result.returncode >= 0, f"the import crashed (signal {-result.returncode})"
    return result.returncode, result.stderr.decode(), target


def _large(middle, items=60_000):
    """A document of ``items`` small dicts with ``middle`` (JSON text) nested deep in the middle."""
    head = ", ".join(json.dumps({"n": i, "s": f"item {i}"}) for i in range(items // 2))
    tail = ", ".join(json.dumps({"n": i, "s": f"item {i}"}) for i in range(items // 2, items))
    return f'[{head}, {{"deep": [[{{"a": [[[{middle}]]]}}]]}}, {tail}]'.encode()


@pytest.mark.parametrize("digits", [LIMIT + 1, 5000, 100_000])
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_a_huge_integer_deep_in_a_large_document_is_refused_not_a_crash(tmp_path, digits, stdin):
    code, stderr, target = _import(tmp_path, _large("9" * digits), stdin=stdin)
    assert code == 1, stderr
    assert '"$int": "0x..."' in stderr and "Traceback" not in stderr, stderr
    with zpydb.connect(target) as db:
        assert "x" not in db.keys()                   # nothing was imported


@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_long_digit_runs_that_are_not_integers_import(tmp_path, stdin):
    strings = ["1" * 100_000, "\\\"" + "2" * 5000, "\\\\" + "3" * 5000]
    middle = ", ".join(['"' + s + '"' for s in strings]
                       + ["0." + "0" * 5000 + "15", "1e" + "0" * 5000 + "3", "-2.5E-" + "0" * 5000
                          + "1", "-" + "9" * LIMIT])
    code, stderr, target = _import(tmp_path, _large(middle), stdin=stdin)
    assert code == 0, stderr
    with zpydb.connect(target) as db:
        stored = db["x"][30_000]["deep"][0][0]["a"][0][0].value()
    assert stored == ["1" * 100_000, '"' + "2" * 5000, "\\" + "3" * 5000, 0.0, 1000.0, -0.25,
                      -int("9" * LIMIT)]


def _at_read_boundary(literal, split_at):
    """A document where ``literal`` (bytes) starts ``split_at`` bytes before the first read ends."""
    head = b'{"pad": "'
    tail = b'", "v": [' + literal + b"]}"
    pad = READ_SIZE - split_at - len(head) - len(b'", "v": [')
    return head + b"p" * pad + tail


@pytest.mark.parametrize("split_at", [1, 2, LIMIT, LIMIT + 1, 5000])
def test_a_literal_split_between_two_reads_is_measured_whole(tmp_path, split_at):
    document = _at_read_boundary(b"8" * 5000, split_at)
    assert document[READ_SIZE - split_at:READ_SIZE + 1].startswith(b"8")
    code, stderr, _ = _import(tmp_path, document, path="db['y']")
    assert code == 1 and '"$int": "0x..."' in stderr, stderr
    for literal, value in [(b'"' + b"8" * 5000 + b'"', "8" * 5000),
                           (b"0." + b"8" * 5000, float("0." + "8" * 5000))]:
        code, stderr, target = _import(tmp_path, _at_read_boundary(literal, split_at),
                                       path="db['y']")
        assert code == 0, stderr
        with zpydb.connect(target) as db:
            assert db["y"]["v"].value() == [value]


def test_an_exponent_past_decimal_range_is_refused_with_a_message(fdb):
    from zpydb import export
    for text in ['{"v": 1e9999999999999999999}', '{"v": [1E-99999999999999999999]}']:
        with pytest.raises(zpydb.Error, match="exponent has too many digits"):
            export.import_json(fdb, io.StringIO(text), progress=False)
    assert list(fdb.keys()) == []


# -- UTF-8 on the way in -----------------------------------------------------------------

def test_a_character_split_between_two_reads_imports(tmp_path):
    document = _at_read_boundary('"\u00e9\u20ac\U0001f600"'.encode(), 2)
    code, stderr, target = _import(tmp_path, document, path="db['y']")
    assert code == 0, stderr
    with zpydb.connect(target) as db:
        assert db["y"]["v"].value() == ["\u00e9\u20ac\U0001f600"]


@pytest.mark.parametrize("document, says", [
    ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
    ('{"a": 1}'.encode("utf-16-le"), "UTF-16 or UTF-32"),
    ('{"a": 1}'.encode("utf-32"), "not UTF-8"),
    (_large('"cafX"').replace(b"cafX", b"caf\xe9"), "not UTF-8"),
    (_large('"x"')[:-10] + b"\xe2\x82", "not UTF-8"),   # ends inside a character
])
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_input_that_is_not_utf8_is_named_so(tmp_path, document, says, stdin):
    code, stderr, target = _import(tmp_path, document, stdin=stdin)
    assert code == 1 and says in stderr and "Traceback" not in stderr, stderr


def test_a_text_stream_with_a_lone_surrogate_is_not_utf8(fdb):
    from zpydb import export
    with pytest.raises(zpydb.Error, match="not UTF-8"):
        export.import_json(fdb, io.StringIO('{"a": "\udcff"}'), progress=False)
    export.import_json(fdb, io.StringIO('\ufeff{"a": "\u00e9"}'), progress=False)  # BOM dropped
    assert fdb["a"].value() == "\u00e9"
