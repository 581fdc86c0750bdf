"""Write (or `--check`) the MySQL DDL in sql/ from the SQLAlchemy tables: one source of truth."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.dialects import mysql
from sqlalchemy.schema import CreateIndex, CreateTable

from orchestrator.store import metadata as orchestrator_metadata
from participant.records import records_table
from service_a import SPEC as A
from service_b import SPEC as B
from service_c import SPEC as C

SQL = Path(__file__).resolve().parent.parent / "sql"
HEADER = "-- Generated from the SQLAlchemy tables by `make sql`; a test fails if they disagree.\n"


def participant_metadata(spec_table: str, column: str) -> MetaData:
    metadata = MetaData()
    records_table(metadata, spec_table, column)
    return metadata


def ddl(database: str, metadata: MetaData) -> str:
    """CREATE statements for one process's database, as MySQL 8 runs them at first start."""
    dialect = mysql.dialect()
    parts = [HEADER, f"CREATE DATABASE IF NOT EXISTS `{database}`;\nUSE `{database}`;\n"]
    for table in metadata.sorted_tables:
        create = "\n".join(line.rstrip() for line in
                           str(CreateTable(table).compile(dialect=dialect)).strip().splitlines())
        parts.append(f"{create} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(f"{str(CreateIndex(index).compile(dialect=dialect)).strip()};\n")
    return "\n".join(parts)


def databases() -> dict[str, tuple[str, MetaData]]:
    """File name -> (database, tables) for each process's database."""
    files = {"10_orchestrator.sql": ("orchestrator", orchestrator_metadata)}
    for number, spec in enumerate((A, B, C), start=2):
        files[f"{number}0_service_{spec.name}.sql"] = (
            f"service_{spec.name}", participant_metadata(spec.table, spec.column))
    return files


def expected_files() -> dict[str, str]:
    """File name -> content for every file in sql/ (run in name order by MySQL's entrypoint)."""
    files = {name: ddl(database, metadata) for name, (database, metadata) in databases().items()}
    files["90_grants.sql"] = HEADER + "\n" + "".join(
        f"GRANT ALL PRIVILEGES ON `{database}`.* TO 'saga'@'%';\n"
        for database, _ in databases().values())
    return files


def main(argv: list[str]) -> int:
    stale = []
    for name, content in expected_files().items():
        path = SQL / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != content:
                stale.append(name)
        else:
            path.write_text(content)
    if stale:
        print(f"sql/ disagrees with the models: {', '.join(stale)}; run `make sql`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
