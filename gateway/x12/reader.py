"""Streaming X12 reader: delimiters from the ISA, segments with their ordinal position.

Memory does not grow with the file: the input is read in fixed-size chunks and segments are
yielded one at a time. Tolerates a UTF-8 byte-order mark, CR/LF between segments and (reported,
not fatal) prose before the ``ISA`` or an ISA whose padding was collapsed.
"""

from __future__ import annotations

import codecs
import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterator

CHUNK_CHARS = 64 * 1024
ISA_LENGTH = 106
MAX_ISA_LENGTH = 200  # a collapsed or padded ISA still fits; past this the ISA is not readable
HEAD_BYTES = 64 * 1024  # how far we look for the ISA before calling the input "not X12"
_BOM = b"\xef\xbb\xbf"


class NotX12Error(ValueError):
    """The input is not an X12 interchange at all (no ISA, binary, empty)."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    element: str = "*"
    component: str = ":"
    repetition: str = "^"
    segment: str = "~"

    def problems(self) -> list[str]:
        """Why these delimiters cannot work (X12.6: distinct, not letters, digits or space)."""
        found = []
        chars = [self.element, self.component, self.segment] + (
            [self.repetition] if self.repetition else []
        )
        if len(set(chars)) != len(chars):
            found.append("delimiters are not all different")
        for name in ("element", "component", "segment"):
            char = getattr(self, name)
            if char.isalnum() or char == " ":
                found.append(f"the {name} separator {char!r} is a letter, digit or space")
        return found


class Segment:
    """One X12 segment. ``fields[0]`` is the segment id, ``fields[n]`` element n (1-based).
    ``ordinal`` is the 1-based position of the segment in the file."""

    __slots__ = ("ordinal", "fields", "raw")

    def __init__(self, ordinal: int, fields: list[str], raw: str) -> None:
        self.ordinal = ordinal
        self.fields = fields
        self.raw = raw

    @property
    def id(self) -> str:
        return self.fields[0]

    def get(self, position: int) -> str:
        """Element ``position`` (1-based), or ``""`` when absent."""
        fields = self.fields
        return fields[position] if position < len(fields) else ""

    def component(self, position: int, index: int, delimiters: Delimiters) -> str:
        """Component ``index`` (1-based) of composite element ``position``."""
        parts = self.get(position).split(delimiters.component)
        return parts[index - 1] if index <= len(parts) else ""

    def __len__(self) -> int:
        return len(self.fields) - 1

    def __repr__(self) -> str:  # never the values: they may be member data
        return f"<Segment #{self.ordinal} {self.id} ({len(self)} elements)>"


@dataclass
class ReaderNotes:
    """What the reader noticed about the layout of the input, for the envelope checks."""

    preamble_chars: int = 0
    isa_length: int = ISA_LENGTH
    encoding: str = "utf-8"


def _find_isa(head: bytes) -> int:
    """Offset of the first ``ISA`` followed by a plausible element separator, or -1."""
    start = 0
    while True:
        offset = head.find(b"ISA", start)
        if offset < 0 or offset + 4 > len(head):
            return -1
        sep = head[offset + 3 : offset + 4]
        if sep and not sep.isalnum() and sep not in (b" ", b"\r", b"\n"):
            return offset
        start = offset + 1


def parse_isa_delimiters(text: str) -> tuple[Delimiters, int]:
    """Delimiters and the length of the ISA segment (terminator included) from text that
    starts with ``ISA``. Works for a fixed-width ISA and for one whose padding was collapsed:
    ISA16 is the character after the 16th element separator, the segment terminator the next.
    """
    element = text[3]
    position = 3
    for _ in range(15):
        position = text.find(element, position + 1)
        if position < 0:
            raise NotX12Error("the ISA segment is incomplete (fewer than 16 elements)")
    if position + 2 >= len(text):
        raise NotX12Error("the ISA segment is incomplete (no segment terminator)")
    component = text[position + 1]
    segment = text[position + 2]
    fields = text[: position + 1].split(element)
    # ISA11 is the repetition separator from 00402 on; before, the standards identifier "U"
    repetition = fields[11] if len(fields) > 11 and len(fields[11]) == 1 and \
        not fields[11].isalnum() else ""
    if segment in "\r\n" and text[position + 2 : position + 4] == "\r\n":
        segment = "\n"  # CRLF-terminated segments: treat LF as terminator, strip the CR
    return Delimiters(element, component, repetition, segment), position + 3


class X12Reader:
    """Iterate over the segments of an X12 file (binary stream or path).

    Raises :class:`NotX12Error` at construction when the input is not X12 at all.
    """

    def __init__(self, source: BinaryIO | str | os.PathLike | bytes) -> None:
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            source = open(source, "rb")  # noqa: SIM115 - closed by close()
        self._stream = source
        head = source.read(HEAD_BYTES)
        if not head.strip():
            raise NotX12Error("the file is empty")
        if head.startswith(_BOM):
            head = head[len(_BOM) :]
        if b"\x00" in head[:4096]:
            raise NotX12Error("the file is binary, not an X12 interchange")
        offset = _find_isa(head)
        if offset < 0:
            raise NotX12Error("no ISA interchange header found: not an X12 file")
        self.notes = ReaderNotes(preamble_chars=offset)
        encoding = "utf-8"
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # a multi-byte character cut at the end of the head is still UTF-8
            if exc.start < len(head) - 4:
                encoding = "cp1252"
        self.notes.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pending = self._decoder.decode(head[offset:])
        try:
            self.delimiters, isa_length = parse_isa_delimiters(self._pending[:512])
        except IndexError as exc:
            raise NotX12Error("the ISA segment is incomplete") from exc
        if isa_length > MAX_ISA_LENGTH:
            raise NotX12Error("the ISA header is malformed: its 16 elements do not end within "
                              f"{MAX_ISA_LENGTH} characters")
        self.notes.isa_length = isa_length

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "X12Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _chunks(self) -> Iterator[str]:
        yield self._pending
        self._pending = ""
        while True:
            block = self._stream.read(CHUNK_CHARS)
            if not block:
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield self._decoder.decode(block)

    def __iter__(self) -> Iterator[Segment]:
        delims = self.delimiters
        term: str = delims.segment
        sep: str = delims.element
        ordinal = 0
        carry: str = ""
        strip_chars: str = "\r\n" if term != "\n" else "\r"
        pieces: list
        piece: str
        text: str
        seg: Segment
        for chunk in self._chunks():
            pieces = (carry + chunk).split(term)
            carry = pieces.pop()
            for piece in pieces:
                text = piece.strip(strip_chars)
                # (the first character first: a segment id is never blank, and in the
                # compiled build that test is inline, the whole-text one a method call)
                if not text or text[0].isspace() and text.isspace():
                    continue
                ordinal += 1
                # (not Segment(...): the compiled build makes it without a call to __init__)
                seg = Segment.__new__(Segment)
                seg.ordinal = ordinal
                seg.fields = text.split(sep)
                seg.raw = text
                yield seg
        text = carry.strip(strip_chars)
        if text.strip():
            # a trailing fragment with no terminator: still a segment, flagged by the checks
            ordinal += 1
            yield Segment(ordinal, text.split(sep), text)


def iter_segments(source: BinaryIO | str | bytes) -> Iterator[Segment]:
    with X12Reader(source) as reader:
        yield from reader
