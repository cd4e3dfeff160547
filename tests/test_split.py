"""Large files split by transaction set and merged (gateway.pipeline.split): a file processed
in parts gets the findings, 999, 277CA, summary and status the whole file gets (but for control
numbers and times), its routed 837P carries the same claims, and the parts stay out of the
mailboxes."""

from __future__ import annotations

import collections
import re

import pytest
from servers import multi_transaction, write_partners, x12_variant

from gateway.pipeline import process as pipeline
from gateway.pipeline import split
from gateway.pipeline.partners import Partners
from gateway.pipeline.process import LEASE, process, run_claimed
from gateway.pipeline.store import Store
from gateway.x12.validate import validate_x12

FILE = multi_transaction(5, defective=(2, 5))


def normalised(text: str) -> str:
    """Control numbers and times blanked: what differs between two runs of the same file."""
    text = re.sub(r"^(ISA(\*[^*]*){8})\*\d{6}\*\d{4}(\*[^*]*){2}\*\d{9}", r"\1*D*T\3*N", text,
                  flags=re.M)
    text = re.sub(r"^(GS(\*[^*]*){3})\*\d{8}\*\d{4}\*\d+", r"\1*D*T*N", text, flags=re.M)
    text = re.sub(r"^(GE\*\d+)\*\d+", r"\1*N", text, flags=re.M)
    text = re.sub(r"^(IEA\*\d+)\*\d+", r"\1*N", text, flags=re.M)
    return re.sub(r"^(BHT(\*[^*]*){3})\*\d{8}\*\d{4}", r"\1*D*T", text, flags=re.M)


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setenv("ECM_GATEWAY_SPLIT_BYTES", "0")
    partners_file, _ = write_partners(tmp_path)
    stores = [Store(f"sqlite:///{tmp_path / name}.sqlite") for name in ("whole", "split")]
    yield stores, Partners.load(partners_file)
    for store in stores:
        store.close()


def documents(store: Store, sid: str) -> dict[str, str]:
    return {d["role"]: store.document(d["id"])["content"].decode() for d in store.documents(sid)}


def test_a_file_in_parts_is_acknowledged_like_the_whole_file(world):
    (whole_store, split_store), partners = world
    whole = whole_store.receive(partner="valley", channel="api", kind="x12", filename=None,
                                payload=FILE).submission_id
    assert process(whole_store, partners, whole).status == "routed"

    sid = split_store.receive(partner="valley", channel="api", kind="x12", filename=None,
                              payload=FILE).submission_id
    assert split_store.claim(sid, "coordinator", LEASE) == "claimed"
    parts = split.split_submission(split_store, sid, "coordinator", per_part=2)
    assert len(parts) == 3 and split_store.submission(sid)["run_state"] == "waiting"
    assert split_store.claim(sid, "another", LEASE) == "waiting"  # nobody runs it whole
    assert split_store.claim_merge(sid, "early", LEASE) is False  # parts not done yet
    for part in reversed(parts):  # in any order, as parallel workers would
        assert process(split_store, partners, part).status == "routed"
    assert split_store.claim_merge(sid, "merger", LEASE)
    assert split_store.claim_merge(sid, "second", LEASE) is False
    outcome = run_claimed(split_store, partners, sid, "merger", work=split.merge_parts)
    assert outcome.status == "routed"

    found, expected = split_store.submission(sid), whole_store.submission(whole)
    assert (found["status"], found["run_state"]) == ("routed", "done")
    assert {k: v for k, v in found["summary"].items() if k != "parts"} == expected["summary"]
    assert expected["summary"]["rejected_claims"] == 4  # two defects in each defective set
    assert split_store.findings(sid) == whole_store.findings(whole) != []
    got, want = documents(split_store, sid), documents(whole_store, whole)
    assert sorted(got) == sorted(want) == ["ack-277ca", "ack-999", "routed-837p"]
    assert normalised(got["ack-999"]) == normalised(want["ack-999"])
    assert normalised(got["ack-277ca"]) == normalised(want["ack-277ca"])
    claims = lambda text: collections.Counter(  # noqa: E731
        s for s in text.split("~\n") if s.startswith("CLM*"))
    assert claims(got["routed-837p"]) == claims(want["routed-837p"])
    assert got["routed-837p"].count("~\nST*837*") == 3  # one transaction set per part
    assert not validate_x12(got["routed-837p"].encode()).findings
    # only the merged documents reach the mailboxes
    assert {d["submission_id"] for d in split_store.mailbox("valley")} == {sid}
    assert [d["submission_id"] for d in split_store.mailbox("demo-plan")] == [sid]


def test_a_dead_lettered_part_dead_letters_the_file(world, monkeypatch):
    (_, store), partners = world
    sid = store.receive(partner="valley", channel="api", kind="x12", filename=None,
                        payload=FILE).submission_id
    store.claim(sid, "c", LEASE)
    parts = split.split_submission(store, sid, "c", per_part=3)
    # split again (as after a crash before the wait was recorded): the same parts, no new ones
    assert split.split_submission(store, sid, "c", per_part=3) == parts
    assert len(store.parts_of(sid)) == 2
    assert process(store, partners, parts[0]).status == "routed"
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setitem(pipeline.STEPS, "x12", broken)
    assert process(store, partners, parts[1], sleep=lambda s: None).status == "dead_letter"
    assert store.claim_merge(sid, "m", LEASE)
    run_claimed(store, partners, sid, "m", work=split.merge_parts)
    found = store.submission(sid)
    assert found["status"] == "dead_letter" and found["error"].startswith("part 2 of 2")
    assert store.mailbox("valley") == []  # part 1's acknowledgments are not handed out alone


def test_what_is_not_split():
    assert split.plan_parts(x12_variant(1), per_part=1) is None  # one transaction set
    assert split.plan_parts(FILE, per_part=5) is None
    broken = FILE.replace(b"GE*5*3", b"GE*4*3")  # the envelope's counts disagree
    assert split.plan_parts(broken, per_part=2) is None
    two_groups = FILE.replace(b"~\nIEA*", b"~\nGS*HC*A*B*20261005*0930*4*X*005010X222A1~\n"
                              b"GE*0*4~\nIEA*")
    assert split.plan_parts(two_groups, per_part=2) is None
    parts = split.plan_parts(FILE, per_part=2)
    assert [(p.number, p.first_transaction) for p in parts] == [(1, 1), (2, 3), (3, 5)]
    assert [validate_x12(p.payload).valid for p in parts] == [False, True, False]  # 2 and 5
    assert parts[2].payload.decode().split("~\n")[-3:] == ["GE*1*3", "IEA*1*000000003", ""]
