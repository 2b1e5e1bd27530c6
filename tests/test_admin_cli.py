"""The operator's commands on ``handle-server`` (run as the command runs them, its ``main``):
``check-config``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from handle_server.cli import main

from .test_transfer import write_config


def test_check_config_on_a_store_not_made_yet(tmp_path, capsys):
    table = {"path": str(tmp_path / "new.sqlite3")}
    config = write_config(tmp_path, "c", table)
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "configuration is valid" in out and "prefixes: TEST" in out
    assert "does not exist yet" in out
    assert not Path(table["path"]).exists()  # checking creates nothing


def test_check_config_reports_the_store(tmp_path, capsys, storage_table):
    config = write_config(tmp_path, "c", storage_table)
    assert main(["migrate", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["check-config", "--config", str(config)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_config_fails_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "x"\n')
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "[server] port" in capsys.readouterr().err

    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 999")
    config = write_config(tmp_path, "newer", {"path": str(newer)})
    assert main(["check-config", "--config", str(config)]) == 2
    assert "upgrade handle-server" in capsys.readouterr().err

    away = {"backend": "postgresql", "dsn": "postgresql://nobody@127.0.0.1:1/none"}
    config = write_config(tmp_path, "away", away)
    assert main(["check-config", "--config", str(config)]) == 1
    assert "unreachable" in capsys.readouterr().err
