"""A routed submission becomes `delivered` once every document routed onward from it has
reached its recipient (downloaded or written to its outbox); acknowledgments to the sender do
not count."""

from server_world import MIXED, make_world


def test_delivered_when_every_routed_document_is_delivered(tmp_path):
    world = make_world(tmp_path)
    sent = world.send("harbor", MIXED)
    assert sent.status == "routed"
    acks = world.box("harbor", sent.submission_id)
    for document in acks:
        world.store.mark_delivered(document["id"])
    assert world.store.submission(sent.submission_id)["status"] == "routed"
    [routed] = world.box("demo-plan", sent.submission_id)
    assert routed["role"] == "routed-837p"
    world.store.mark_delivered(routed["id"])
    found = world.store.submission(sent.submission_id)
    assert found["status"] == "delivered"
    assert [h["status"] for h in world.store.history(sent.submission_id)][-2:] == [
        "routed", "delivered"]
    world.store.mark_delivered(routed["id"])  # fetched again: nothing changes
    assert [h["status"] for h in world.store.history(sent.submission_id)].count(
        "delivered") == 1


def test_a_rejected_submission_never_becomes_delivered(tmp_path):
    world = make_world(tmp_path)
    broken = MIXED.replace(b"ISA*00", b"ISA*0X", 1)
    sent = world.send("harbor", broken)
    assert sent.status == "rejected"
    for document in world.box("harbor", sent.submission_id):
        world.store.mark_delivered(document["id"])
    assert world.store.submission(sent.submission_id)["status"] == "rejected"
