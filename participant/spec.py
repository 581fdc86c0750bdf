"""What makes one participant differ from the others: its name, table, column and port."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """One participant service."""

    name: str  # "a"
    table: str  # "table_a"
    column: str  # the table's value column, e.g. "payment_method"
    field: str  # the saga input field it stores there, e.g. "payment"
    port: int

    @property
    def env_prefix(self) -> str:
        return f"SERVICE_{self.name.upper()}_"
