"""What the database adapter knows about the server it talks to, and the rules it keeps on
every server because of the embedded one's gaps."""

from __future__ import annotations

import pytest

from services.common.mongo import EMBEDDED, DatabaseCapabilities, index, projection


def test_the_embedded_server_is_known_by_its_build_info():
    caps = DatabaseCapabilities.of({"process": "nx_27017", "version": "7.0.0"})
    assert caps == EMBEDDED
    assert not caps.concurrent_transactions


def test_a_real_server_has_every_capability():
    caps = DatabaseCapabilities.of({"process": "mongod", "version": "7.0.14"})
    assert caps.server == "mongodb 7.0.14"
    assert caps.concurrent_transactions and caps.indexed_or and caps.binary_in_updates


def test_an_unanswered_build_info_assumes_the_embedded_gaps():
    caps = DatabaseCapabilities.of(None)
    assert caps.server == "unknown"
    assert not caps.concurrent_transactions


def test_compound_indexes_naming_id_are_refused():
    with pytest.raises(ValueError, match="compound_index_with_id"):
        index("customer_id", "_id")
    assert index("_id").document["key"] == {"_id": 1}


def test_projections_name_whole_top_level_fields():
    assert projection("value.abc_class", "value.clv_12m_cents", "rfm") == {"value": 1, "rfm": 1}
