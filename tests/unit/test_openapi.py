"""Each service's OpenAPI document is whole: every `$ref` in it points at something in it."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from services.common.settings import Settings

SERVICES = ("orders", "complaints", "loyalty", "profiles")


def openapi_of(service: str) -> dict[str, Any]:
    return importlib.import_module(f"services.{service}.main").create_app(Settings()).openapi()


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local reference (`#/a/b`) as a JSON pointer into `document`; KeyError when it dangles."""
    assert ref.startswith("#/"), f"{ref}: only references inside the document are expected"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.mark.parametrize("service", SERVICES)
def test_every_reference_in_the_openapi_resolves(service):
    spec = openapi_of(service)
    refs = references(spec)
    assert refs, "a document with models refers to them"
    dangling = []
    for ref in sorted(set(refs)):
        try:
            resolve(spec, ref)
        except (KeyError, TypeError):
            dangling.append(ref)
    assert dangling == []
