"""Everything under tests/integration/ talks to real services: mark it ``integration``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.swarm_support import swarm_cluster  # noqa: F401  (a session fixture)

_HERE = Path(__file__).parent.resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # conftest hooks see the whole session's items, so mark only the ones in this folder
    for item in items:
        if item.path.resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)
