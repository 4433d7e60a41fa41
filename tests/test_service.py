"""Building the service: start-up audit records and refusals, without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from twisted.internet.testing import MemoryReactorClock

from appliance import config as config_module
from appliance.cli import main
from appliance.config import ConfigError
from appliance.reactor import IApplianceReactor
from appliance.service import make_service
from appliance.store.audit import records
from appliance.store.database import open_database


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A dev instance's config file."""
    assert main(["init", "--dev", str(tmp_path / "var")], environ={}) == 0
    return tmp_path / "var" / "telemancer.toml"


def _production(config_path: Path, allow_unencrypted: bool) -> config_module.Config:
    text = config_path.read_text().replace('mode = "development"', 'mode = "production"')
    if allow_unencrypted:
        text = text.replace('data_dir = "."', 'data_dir = "."\nallow_unencrypted_storage = true')
    config_path.write_text(text)
    return config_module.load(config_path, {})


def _actions(config_path: Path) -> list[str]:
    db = open_database(config_path.parent / "telemancer.sqlite3")
    try:
        return [r.action for r in records(db)]
    finally:
        db.close()


def test_unencrypted_storage_override_is_audited_at_every_start(config_path: Path) -> None:
    """With allow_unencrypted_storage in production, each start writes a warning record."""
    config = _production(config_path, allow_unencrypted=True)
    reactor = cast(IApplianceReactor, MemoryReactorClock())
    for _ in range(2):
        service = make_service(config, reactor)
        service.store.directory.db.close()
    actions = _actions(config_path)
    assert actions[-4:] == ["service.start", "storage.unencrypted_allowed"] * 2


def test_refused_start_writes_nothing_and_listens_nowhere(config_path: Path) -> None:
    """A production refusal happens before the store is touched or a port opened."""
    config = _production(config_path, allow_unencrypted=False)
    before = _actions(config_path)
    reactor = MemoryReactorClock()
    with pytest.raises(ConfigError) as refused:
        make_service(config, cast(IApplianceReactor, reactor))
    assert [key for key, _ in refused.value.problems] == ["data_dir"]
    assert reactor.sslServers == [] and _actions(config_path) == before
