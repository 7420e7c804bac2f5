"""The server version check every command runs at start (engine/store/migrate.py)."""

from __future__ import annotations

import pytest

from engine.core.errors import ConfigError
from engine.store.migrate import MIN_SERVER_VERSION, require_server_version


def test_a_server_older_than_the_minimum_is_refused_with_its_version() -> None:
    with pytest.raises(ConfigError, match="version 14; Warden needs 15 or newer"):
        require_server_version(140012)


@pytest.mark.parametrize("version", [MIN_SERVER_VERSION, 150019, 170002])
def test_the_minimum_and_newer_are_accepted(version: int) -> None:
    require_server_version(version)
