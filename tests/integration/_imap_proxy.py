"""A real TCP proxy in front of Dovecot that can break things on purpose (IMAP tests only).

`ImapProxy` forwards 127.0.0.1 traffic to the test Dovecot byte for byte and can cut the
connection at an exact point of either stream (`Cut`), end TLS in front of Dovecot, or offer
STARTTLS on top of a Dovecot that has none. `tls_pair` makes a throwaway certificate.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from tests.services import ImapAccess


class Cut:
    """Cut the stream ``after`` bytes past the ``occurrence``-th ``marker`` (one shot)."""

    def __init__(self, marker: bytes, after: int = 0, occurrence: int = 1) -> None:
        self.marker, self.after, self.occurrence = marker, after, occurrence
        self.seen = 0
        self.fired = False

    def position(self, tail: bytes, chunk: bytes) -> int | None:
        data, start = tail + chunk, 0
        while (i := data.find(self.marker, start)) >= 0:
            start = i + 1
            if i + len(self.marker) <= len(tail):
                continue  # counted with the previous chunk
            self.seen += 1
            if self.seen == self.occurrence:
                return i + len(self.marker) - len(tail) + self.after
        return None


class ImapProxy:
    """127.0.0.1:port -> Dovecot; optional TLS in front, STARTTLS, and cuts."""

    def __init__(self, imap: ImapAccess, tls: ssl.SSLContext | None = None) -> None:
        self.imap, self.tls = imap, tls
        self.starttls = False
        self.source = "127.0.0.1"  # Dovecot's auth penalties are per source address
        self.from_server: Cut | None = None
        self.from_client: Cut | None = None
        self.port = 0
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        ssl_ctx = None if self.starttls else self.tls
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=ssl_ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open connection; wait for the pumps to finish."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._open.add(writer)
        up_reader, up_writer = await asyncio.open_connection(
            self.imap.host, self.imap.port, local_addr=(self.source, 0)
        )
        self._open.add(up_writer)
        try:
            if self.starttls:
                await self._negotiate(reader, writer, up_reader, up_writer)
            pair = (writer, up_writer)
            await asyncio.gather(
                self._pump(up_reader, writer, self.from_server, pair),
                self._pump(reader, up_writer, self.from_client, pair),
            )
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
                self._open.discard(w)

    async def _negotiate(self, reader: Any, writer: Any, up_reader: Any, up_writer: Any) -> None:
        """Offer STARTTLS on top of a Dovecot that has none, then switch the client to TLS."""
        writer.write(await up_reader.readline())
        while True:
            line = await reader.readline()
            tag, _, command = line.decode().strip().partition(" ")
            if command.upper() == "STARTTLS":
                writer.write(f"{tag} OK Begin TLS negotiation now\r\n".encode())
                await writer.drain()
                await writer.start_tls(self.tls)
                return
            up_writer.write(line)
            while not (answer := await up_reader.readline()).startswith(tag.encode()):
                if answer.startswith(b"* CAPABILITY"):
                    answer = answer.rstrip() + b" STARTTLS\r\n"
                writer.write(answer)
            writer.write(answer)

    async def _pump(self, src: Any, dst: Any, cut: Cut | None, pair: tuple[Any, Any]) -> None:
        tail, countdown = b"", None
        while chunk := await src.read(65536):
            if cut is not None and not cut.fired:
                if countdown is None:
                    countdown = cut.position(tail, chunk)
                tail = (tail + chunk)[-len(cut.marker) :]
                if countdown is not None and countdown <= len(chunk):
                    dst.write(chunk[: max(countdown, 0)])
                    await dst.drain()
                    cut.fired = True
                    self.cuts += 1
                    for w in pair:
                        w.transport.abort()
                    return
                if countdown is not None:
                    countdown -= len(chunk)
            dst.write(chunk)
            await dst.drain()
