"""The JSON Schemas spell the shared vocabulary out as literal enums; they must say exactly
what services/common/vocabulary.py says, or an event one service writes fails another's
validation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.common.contracts import SCHEMAS_DIR
from services.common.vocabulary import ChurnAction, ChurnLevel, LifecycleStage, LoyaltyTier, Segment
from services.loyalty.domain import TIERS, Programme

# (schema, path to the property) -> the vocabulary it carries.
FIELDS = [
    ("profile.segment_changed", ("properties", "from_segment"), Segment),
    ("profile.segment_changed", ("properties", "to_segment"), Segment),
    ("profile.lifecycle_changed", ("properties", "from_stage"), LifecycleStage),
    ("profile.lifecycle_changed", ("properties", "to_stage"), LifecycleStage),
    ("common", ("$defs", "tier"), LoyaltyTier),
    ("profile.churn_warning", ("properties", "level"), ChurnLevel),
    ("profile.churn_warning", ("properties", "recommended_action"), ChurnAction),
]
VOCABULARIES = (Segment, LifecycleStage, LoyaltyTier, ChurnLevel, ChurnAction)


def schema(name: str) -> dict[str, Any]:
    return orjson.loads((SCHEMAS_DIR / name / "v1.json").read_bytes())


@pytest.mark.parametrize(("name", "path", "vocabulary"), FIELDS, ids=[f"{n}:{p[-1]}" for n, p, _ in FIELDS])
def test_schema_enum_is_the_vocabulary_in_its_order(name, path, vocabulary):
    node = schema(name)
    for key in path:
        node = node[key]
    assert node["enum"] == [member.value for member in vocabulary]


def enums(node: Any) -> list[list[Any]]:
    if isinstance(node, dict):
        return ([node["enum"]] if "enum" in node else []) + [e for v in node.values() for e in enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in enums(v)]
    return []


def test_no_other_schema_enum_is_a_stale_copy_of_a_vocabulary():
    """Any enum made only of one vocabulary's words (a copy made elsewhere) must be all of it."""
    owner = {member.value: vocabulary for vocabulary in VOCABULARIES for member in vocabulary}
    copies = 0
    for path in SCHEMAS_DIR.glob("*/v1.json"):
        for enum in enums(orjson.loads(path.read_bytes())):
            vocabularies = {owner.get(word) for word in enum}
            if len(vocabularies) == 1 and None not in vocabularies:
                assert enum == [member.value for member in vocabularies.pop()], (path.parent.name, enum)
                copies += 1
    assert copies == len(FIELDS)


def test_loyalty_tiers_are_the_vocabulary_in_ascending_order():
    assert [t.name for t in Programme().tiers] == list(TIERS) == [t.value for t in LoyaltyTier]
    thresholds = [t.threshold_cents for t in Programme().tiers]
    assert thresholds == sorted(thresholds)


def test_the_profiles_openapi_lists_the_vocabulary():
    from services.profiles.main import create_app

    openapi = create_app().openapi()
    components = openapi["components"]["schemas"]
    for vocabulary in VOCABULARIES:
        assert components[vocabulary.__name__]["enum"] == [member.value for member in vocabulary]
    search = {p["name"]: p["schema"] for p in openapi["paths"]["/customers"]["get"]["parameters"]}
    assert search["churn_level"]["anyOf"][0] == {"$ref": "#/components/schemas/ChurnLevel"}
    assert components["ActionIn"]["properties"]["action"] == {"$ref": "#/components/schemas/ChurnAction"}
