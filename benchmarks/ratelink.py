"""A TCP relay whose downstream (server to client) bytes share one fixed rate: the cluster's link to the
internet, in front of a loopback hub. Every connection draws from the same budget, so N clients downloading
at once each get about 1/N of it, as N replicas behind one egress would.

    with RateLink(("10.88.0.1", 0), ("127.0.0.1", hub_port), 16 << 20) as link:
        link.address   # (host, port) to give the clients
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType

CHUNK = 64 << 10


class RateLink:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], bytes_per_second: int) -> None:
        self.listen = listen
        self.target = target
        self.rate = bytes_per_second
        self.address: tuple[str, int] = listen
        self._next_slot = 0.0  # monotonic time from which the link is free again (event-loop thread only)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ratelink", daemon=True)
        self._server: asyncio.Server | None = None

    async def _throttle(self, size: int) -> None:
        now = time.monotonic()
        start = max(now, self._next_slot)
        self._next_slot = start + size / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, throttled: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                if throttled:
                    await self._throttle(len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer, throttled=False),
                             self._pipe(up_reader, writer, throttled=True))

    def start(self) -> RateLink:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, *self.listen), self._loop)
        self._server = started.result(timeout=10)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> RateLink:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
