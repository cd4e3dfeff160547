import io

import pytest

from gateway.x12 import reader as reader_module
from gateway.x12.reader import NotX12Error, X12Reader

ISA = ("ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       *261005*0930*^*"
       "00501*000000001*0*P*:~")


def read(data: bytes):
    with X12Reader(io.BytesIO(data)) as r:
        return r, list(r)


def test_delimiters_come_from_the_isa():
    data = ISA.replace("*", "|").replace("~", "\n").replace(":", ">").encode() + \
        b"GS|HC|A|B|20261005|0930|1|X|005010X222A1\nGE|0|1\nIEA|1|000000001\n"
    r, segs = read(data)
    assert (r.delimiters.element, r.delimiters.component, r.delimiters.repetition,
            r.delimiters.segment) == ("|", ">", "^", "\n")
    assert [s.id for s in segs] == ["ISA", "GS", "GE", "IEA"]
    assert segs[1].get(8) == "005010X222A1"


def test_bom_crlf_and_ordinals():
    data = b"\xef\xbb\xbf" + ISA.encode() + b"\r\nGS*HC*A*B*20261005*0930*1*X*005010X222A1~\r\n" \
        b"GE*0*1~\r\nIEA*1*000000001~\r\n"
    r, segs = read(data)
    assert [(s.ordinal, s.id) for s in segs] == [(1, "ISA"), (2, "GS"), (3, "GE"), (4, "IEA")]
    assert r.notes.preamble_chars == 0 and r.notes.isa_length == 106


def test_prose_before_isa_and_collapsed_isa_are_noted_not_fatal():
    collapsed = "ISA*00* *00* *ZZ*SENDER *ZZ*RECEIVER *261005*0930*^*00501*000000001*0*P*:~"
    r, segs = read(b"Scenario 1\nsome prose\n" + collapsed.encode() + b"IEA*0*000000001~")
    assert r.notes.preamble_chars == len("Scenario 1\nsome prose\n")
    assert r.notes.isa_length == len(collapsed)
    assert [s.id for s in segs] == ["ISA", "IEA"]


def test_segments_split_across_chunks(monkeypatch):
    monkeypatch.setattr(reader_module, "CHUNK_CHARS", 7)
    body = "".join(f"NTE*ADD*NOTE {i}~" for i in range(50))
    _, segs = read((ISA + body + "IEA*0*000000001~").encode())
    assert len(segs) == 52
    assert segs[-2].fields == ["NTE", "ADD", "NOTE 49"]


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"\x00\x01\x02ISA", "binary"),
    (b"claim_id,cin\n1,2\n", "no ISA"),
    (b"ISA*00*", "incomplete"),
])
def test_not_x12(data, message):
    with pytest.raises(NotX12Error, match=message):
        X12Reader(io.BytesIO(data))


def test_segment_repr_never_shows_values():
    _, segs = read((ISA + "NM1*IL*1*DOE*JANE****MI*91234567A~").encode())
    assert "DOE" not in repr(segs[1]) and "91234567A" not in repr(segs[1])
