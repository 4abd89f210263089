"""Strict JSON read as a stream of events: what ``zpydb import`` parses.

ijson's C parser (yajl2_c) gives ``(event, value)`` pairs while reading the
input in 64 KB pieces, so a document of any size is parsed in bounded memory.
This module puts zpydb's rules for input around it, the same rules (and
messages) as the ``json.load`` that import used before it streamed:

* strict UTF-8: a text stream is encoded, a binary one is checked with an
  incremental decoder (a character split between two pieces is fine); a
  leading byte order mark is dropped; UTF-16/32 is named as such;
* strict JSON numbers: no NaN or Infinity, no number too large for a float
  (``1e400``); non-integers come back as floats (ijson gives Decimals);
* nesting past what zpydb can store is refused while parsing (no deep stack);
* an integer literal longer than ``sys.get_int_max_str_digits()`` is refused
  *before the parser sees it* (:class:`LongIntegerGuard`): yajl2_c crashes the
  whole process (segmentation fault) when Python refuses to convert such a
  literal, so it must never get one.
"""

import codecs
import decimal
import re
import sys

import ijson

from .errors import Error
from .nodes import MAX_DEPTH

#: JSON nesting past this cannot hold a storable value (a stored level takes at
#: most 3 JSON levels, as {"$dict": [[key, value]]}); refused while parsing.
JSON_MAX_NESTING = 4 * MAX_DEPTH
#: Bytes the parser asks for at a time (ijson's default).
READ_SIZE = 64 * 1024
_NOTHING_IMPORTED = "nothing was imported"


def digit_limit():
    """Python's limit on decimal digits in an int conversion (0: none)."""
    return sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0


def long_number_message(limit):
    return (f"the input holds a number JSON cannot read here (more than {limit} digits "
            f"before its decimal point); write an integer as {{\"$int\": \"0x...\"}} "
            f"(zpydb export does); {_NOTHING_IMPORTED}")


def not_utf8_message(reason):
    return (f"the input is not UTF-8 text ({reason}); JSON files are UTF-8 (convert it, "
            f"e.g. with iconv -f UTF-16 -t UTF-8); {_NOTHING_IMPORTED}")


def events(stream):
    """The strict :class:`Events` of the JSON document read from ``stream`` (text or binary)."""
    reader = Utf8Reader(stream, LongIntegerGuard(digit_limit()))
    return Events(ijson.basic_parse(reader, buf_size=READ_SIZE))


class LongIntegerGuard:
    """Refuses a run of digits past ``limit`` that is a number's integer part.

    Called with each piece of the input, in order, before the parser gets it.
    A run of digits inside a string is fine (``"0000...0"``), and so is one
    after a ``.`` or in an exponent (``0.000...1``, ``1e000...5``: floats, which
    yajl2_c converts safely); only the integer part of a number is converted
    with Python's digit limit.  Telling strings apart needs the quote parity:
    the state (in a string? after a backslash?) is carried from piece to piece,
    and so is a run of digits that reaches the end of a piece, so a literal split
    across pieces is measured whole.  The work per piece is a few C-speed scans
    (``bytes.count``, regexes); runs of digits long enough to matter are rare.

    The guard follows valid JSON; on invalid input its idea of "in a string" may
    differ from the parser's only after a point where the parser stops with an
    error, so what it lets through is never converted.
    """

    def __init__(self, limit):
        self.limit = limit
        self.in_string = False      # at the end of what was fed
        self.escaped = False        # ... right after a backslash inside a string
        self.run = 0                # digits at the end of what was fed
        self.run_is_integer = False  # ... and they begin an integer part
        self.last = b""             # the last two bytes fed (what precedes a run)
        if limit:
            self._long_run = re.compile(rb"(?<![0-9])[0-9]{%d}" % (limit + 1))

    def feed(self, data):
        """Check the next piece; raises :class:`~zpydb.errors.Error` for a long integer."""
        if not self.limit or not data:
            return
        head = _leading_digits(data)
        if head:
            if not self.run:  # a run starts here: what precedes it is in self.last
                self.run_is_integer = not self.in_string and _starts_integer(self.last)
            self.run += head
            if self.run_is_integer and self.run > self.limit:
                raise Error(long_number_message(self.limit))
            if head == len(data):
                self.last, self.escaped = (self.last + data)[-2:], False
                return
        for match in self._long_run.finditer(data, head):
            start = match.start()
            in_string, _ = _scan_quotes(data[:start], self.in_string, self.escaped)
            if not in_string and _starts_integer(_before(self.last, data, start)):
                raise Error(long_number_message(self.limit))
        self.in_string, self.escaped = _scan_quotes(data, self.in_string, self.escaped)
        tail = len(data) - len(data.rstrip(b"0123456789"))
        if tail:
            self.run = tail
            before = _before(self.last, data, len(data) - tail)
            self.run_is_integer = not self.in_string and _starts_integer(before)
        else:
            self.run, self.run_is_integer = 0, False
        self.last = (self.last + data)[-2:]


_DIGITS = re.compile(rb"[0-9]*")
_ESCAPE_PAIR = re.compile(rb"\\.", re.DOTALL)
_FRACTION_OR_EXPONENT = frozenset(b".eE")
_EXPONENT = frozenset(b"eE")
_SIGN = frozenset(b"+-")


def _before(last, data, start):
    """The two bytes before ``data[start]`` (``last``: the two before ``data``)."""
    return data[start - 2:start] if start >= 2 else (last + data[:start])[-2:]


def _leading_digits(data):
    return _DIGITS.match(data).end()


def _starts_integer(before):
    """Does a run of digits preceded by the bytes ``before`` start a number's integer part?

    Not after ``.`` (a fraction), ``e``/``E`` or ``e+``/``e-`` (an exponent).
    """
    if not before:
        return True
    if before[-1] in _FRACTION_OR_EXPONENT:
        return False
    return not (before[-1] in _SIGN and len(before) > 1 and before[-2] in _EXPONENT)


def _scan_quotes(data, in_string, escaped):
    """``(in_string, escaped)`` after ``data``, given the state before it.

    Each ``\\x`` pair is one escaped character (a backslash only occurs inside a
    string in valid JSON), so the quotes left each open or close a string.
    """
    if escaped and data:
        data, escaped = data[1:], False
    if b"\\" in data:
        data = _ESCAPE_PAIR.sub(b"", data)
        if data.endswith(b"\\"):
            data, escaped = data[:-1], True
    return in_string ^ bool(data.count(b'"') & 1), escaped


class Utf8Reader:
    """A binary ``read`` for ijson over a text or binary stream: strict UTF-8, guarded.

    The first piece loses a UTF-8 byte order mark; a NUL among its first bytes
    means UTF-16 or UTF-32 (JSON text never has one).  Every piece goes through
    the :class:`LongIntegerGuard` before the parser sees it.
    """

    def __init__(self, stream, guard):
        self.stream, self.guard, self.first = stream, guard, True
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")

    def read(self, size=-1):
        if size == 0:  # ijson's probe: bytes or str?
            return b""
        data = self._utf8(self.stream.read(size if size and size > 0 else READ_SIZE))
        if self.first:
            data = self._start(data)
        self.guard.feed(data)
        return data

    def _utf8(self, data):
        if isinstance(data, str):
            return data.encode("utf-8")  # a lone surrogate (surrogateescape) raises here
        self.decoder.decode(data, final=not data)
        return data

    def _start(self, data):
        """Drop a byte order mark; refuse UTF-16/32, which have NULs in the first bytes."""
        while len(data) < 4:
            more = self._utf8(self.stream.read(READ_SIZE))
            if not more:
                break
            data += more
        self.first = False
        if data.startswith(codecs.BOM_UTF8):
            data = data[len(codecs.BOM_UTF8):]
        if b"\x00" in data[:4]:
            raise Error(not_utf8_message("it has NUL bytes: UTF-16 or UTF-32?"))
        return data


class Events:
    """ijson's events with zpydb's number rules, nesting limit and messages."""

    def __init__(self, parsed):
        self.parsed, self.depth = parsed, 0

    def next(self):
        try:
            event, value = next(self.parsed)
        except StopIteration:
            raise Error("the input is not valid JSON: it ends early") from None
        except _INPUT_ERRORS as exc:
            raise _input_error(exc) from None
        if event == "number":
            if isinstance(value, decimal.Decimal):  # json's number rules: a float
                number = float(value)
                if number in (float("inf"), float("-inf")):
                    raise Error(f"the input is not strict JSON: the number {str(value)[:40]} "
                                f"is too large for a float; {_NOTHING_IMPORTED}")
                value = number
        elif event in ("start_map", "start_array"):
            self.depth += 1
            if self.depth > JSON_MAX_NESTING:
                raise Error(f"the input nests arrays/objects deeper than zpydb stores "
                            f"({MAX_DEPTH} levels); {_NOTHING_IMPORTED}")
        elif event in ("end_map", "end_array"):
            self.depth -= 1
        return event, value

    def end(self):
        """Check that nothing but whitespace follows the document."""
        try:
            next(self.parsed)  # ijson raises on trailing data
        except StopIteration:
            return
        except _INPUT_ERRORS as exc:
            raise _input_error(exc) from None
        raise Error("the input is not valid JSON: more than one value")


#: What reading and parsing raise for bad input (Error: the reader's own checks).
_INPUT_ERRORS = (Error, UnicodeError, decimal.InvalidOperation, ijson.JSONError)


def _input_error(exc):
    """The zpydb Error for what the reader or the parser raised."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, UnicodeError):
        return Error(not_utf8_message(exc))
    if isinstance(exc, decimal.InvalidOperation):  # an exponent past Decimal's range
        return Error(f"the input holds a number JSON cannot read here (its exponent has "
                     f"too many digits); {_NOTHING_IMPORTED}")
    return _bad_json(exc)


def _bad_json(exc):
    """NaN/Infinity get the strict-JSON message (yajl shows the text at the error)."""
    lines = str(exc).splitlines()
    if len(lines) >= 3 and "^" in lines[2]:
        at = lines[2].index("^")
        near = lines[1][max(0, at - 1):at + 9]
        found = re.match(r"-?(NaN|Infinity)", near.lstrip()) or \
            re.match(r"(NaN|Infinity)", lines[1][at:at + 8])
        if found:
            return Error(f"the input is not strict JSON: {found.group(0)} is not a JSON value "
                         f"(export refuses it too); {_NOTHING_IMPORTED}")
    return Error(f"the input is not valid JSON: {' '.join(str(exc).split())}; "
                 f"{_NOTHING_IMPORTED}")
