from __future__ import annotations

import pytest

from services.stack.harness import Stack, start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The embedded broker and database, started once for the whole run on free ports."""
    started = start_stack(tmp_path_factory.mktemp("stack"))
    yield started
    started.stop()
