"""The signal outbox's bookkeeping: which stored signals still wait to be published."""

from services.scoring.signal_outbox import SignalOutbox


def test_stored_signals_past_the_published_mark_are_the_ones_still_waiting():
    outbox = SignalOutbox(store=None, producer=None, retention=None)
    outbox.published_through = {3: 20}
    doc = {
        "pending": [{"seq": 19, "event": "a"}, {"seq": 20, "event": "b"}, {"seq": 21, "event": "c"}],
        "pending_seq": 21,
    }
    assert [e["event"] for e in outbox.waiting(doc, 3)] == ["c"]  # 19 and 20 are out
    assert [e["event"] for e in outbox.waiting(doc, 4)] == ["a", "b", "c"]  # nothing out there yet
    # the earlier form: bare texts, all of the batch that wrote the profile
    assert outbox.waiting({"pending": ["x"], "pending_seq": 21}, 3) == [{"seq": 21, "event": "x"}]
    assert outbox.waiting({"pending": ["x"], "pending_seq": 20}, 3) == []
