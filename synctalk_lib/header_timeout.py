"""A deadline for reading a request's headers, which uvicorn does not have.

uvicorn reads headers for as long as a client keeps sending them. Such a connection never
reaches the app (so it holds no animation slot), but it counts towards `limit_concurrency`
(the server's `max_connections`): once that many trickling connections are open, uvicorn
answers every new request with 503 ("slowloris"). This protocol closes a connection whose
client has not finished a request's headers within `seconds` of connecting, or of its previous
response ending (keep-alive). It builds on uvicorn's h11 protocol (always installed with
uvicorn) and on three of its internals: `connection_made`, `on_response_complete` and the
h11 connection's state; `tests/test_server.py` checks it against the uvicorn installed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing clients that take longer than `header_timeout_s` to
    send a request's headers. Subclass via `with_header_timeout`, which sets the limit."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # a keep-alive connection waits for its next request

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        """Close the connection if its client is still sending a request's headers (h11
        stays IDLE until they are complete); a request past them runs on untouched."""
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            who = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("%s: closed, no complete request headers within %g s", who,
                     self.header_timeout_s)
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to give uvicorn (`http=`), with this header deadline."""
    if seconds <= 0:
        raise ValueError(f"header timeout must be positive, got {seconds}")
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": seconds})


__all__ = ["HeaderTimeoutProtocol", "with_header_timeout"]
