"""Write .env from .env.example with a fresh random secret for each `change-me` (`make up`).

Standard library only: it runs before any virtual environment exists. Leaves an existing
.env alone.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    target = ROOT / ".env"
    if target.exists():
        print(".env exists; leaving it as it is")
        return 0
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, _, value = line.partition("=")
        if value == "change-me" and not line.startswith("#"):
            # Hex only: safe inside the SQL and the URLs the passwords go into.
            line = f"{name}={secrets.token_hex(24)}"
        lines.append(line)
    # Made readable by its owner only from the start: no moment when others may read it.
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as env:
        env.write("\n".join(lines) + "\n")
    print("wrote .env with fresh secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
