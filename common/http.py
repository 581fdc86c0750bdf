"""HTTP between the processes: one pool of kept-alive connections per process, signed calls.

urllib3 is the pool requests is built on; used directly, a call costs a fraction of the CPU
requests spends preparing it (measured: the participant calls were a third of the
orchestrator's CPU). Every call here is to another process of this system, so there is no
proxy or netrc to look up, and no retry: whoever calls decides what another attempt means.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import TimeoutError as TransportTimeout
from urllib3.util import parse_url

from common.signing import SIGNATURE_HEADER, sign

JSON = {"Content-Type": "application/json"}


class CallFailed(Exception):
    """No answer: the process is unreachable, or the connection broke."""


class CallTimedOut(CallFailed):
    """No answer within the timeout."""


@dataclass(frozen=True)
class Reply:
    """What a process answered."""

    status: int
    data: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The body as JSON; ValueError if it is none."""
        return json.loads(self.data)

    def json_object(self) -> dict[str, Any] | None:
        """The body, if it is a JSON object."""
        try:
            body = self.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class Http:
    """Calls to the other processes, over kept-alive connections shared by this process's
    threads (up to `connections` per process called kept at once); signed with `secret`."""

    def __init__(self, secret: str = "", connections: int = 64) -> None:
        self.secret = secret
        self.connections = connections
        self._pools: dict[str, urllib3.HTTPConnectionPool] = {}  # by scheme://host:port
        self._guard = threading.Lock()

    def _pool(self, url: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The pool of kept-alive connections to the process at `url`, and the path to ask it."""
        origin, slash, rest = url.partition("://")[2].partition("/")
        pool = self._pools.get(origin)
        if pool is None:
            with self._guard:
                pool = self._pools.get(origin)
                if pool is None:
                    parsed = parse_url(url)
                    secure = parsed.scheme == "https"
                    kind = urllib3.HTTPSConnectionPool if secure else urllib3.HTTPConnectionPool
                    pool = self._pools[origin] = kind(parsed.host or "localhost", parsed.port,
                                                      maxsize=self.connections, block=False, retries=False)
        return pool, slash + rest

    def post(self, url: str, body: bytes, timeout: float, headers: Mapping[str, str] | None = None,
             signed: bool = True) -> Reply:
        """POST `body` (JSON); signed over the body, the path and the headers a participant obeys."""
        sent = {**JSON, **(headers or {})}
        pool, path = self._pool(url)
        if signed:
            sent[SIGNATURE_HEADER] = sign(self.secret, "POST", path.partition("?")[0] or "/", body,
                                          headers=sent)
        return self._request(pool, "POST", path, timeout, body=body, headers=sent)

    def post_json(self, url: str, payload: Any, timeout: float, signed: bool = True) -> Reply:
        return self.post(url, json.dumps(payload, separators=(",", ":")).encode(), timeout, signed=signed)

    def get(self, url: str, timeout: float) -> Reply:
        pool, path = self._pool(url)
        return self._request(pool, "GET", path, timeout)

    @staticmethod
    def _request(pool: urllib3.HTTPConnectionPool, method: str, path: str, timeout: float,
                 **options: Any) -> Reply:
        try:
            answer = pool.urlopen(method, path or "/", timeout=urllib3.Timeout(total=timeout), **options)
        except TransportTimeout:
            raise CallTimedOut(f"no answer within {timeout:g} s") from None
        except TransportError as error:
            raise CallFailed(f"{type(error).__name__}: {error}") from None
        return Reply(answer.status, answer.data, answer.headers)
