"""The DB-API connection paths (`raw_writing`, `raw_reading`) fail as SQLAlchemy's do: a driver's
error, connecting or running, is raised as SQLAlchemy's, which the apps answer with a 503."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from common.db import raw_reading, raw_writing


@pytest.mark.parametrize("use", [raw_writing, raw_reading])
def test_a_database_that_cannot_be_reached_is_sqlalchemys_error(tmp_path: Path, use: object) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/no/such/directory/x.db")  # connecting fails
    with pytest.raises(OperationalError), use(engine):  # type: ignore[operator]
        pass


def test_a_failing_statement_is_sqlalchemys_error(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(OperationalError), raw_writing(engine) as connection:
        connection.cursor.execute("SELECT * FROM no_such_table")
