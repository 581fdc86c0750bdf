"""Where every process reads its settings: the environment, over the values in `.env`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values


def environment(dotenv: str | Path = ".env") -> dict[str, str]:
    """The process environment over `.env` (when there is one): a variable set in both
    takes the environment's value, as with docker compose."""
    from_file = dotenv_values(dotenv) if Path(dotenv).is_file() else {}
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A 0/1 (or false/true) setting; ValueError for anything else."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0 or 1, not {raw!r}")
