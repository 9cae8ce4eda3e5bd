#!/usr/bin/env python3
"""A real SMTP server for stackd's notification tests (aiosmtpd).

    smtp_sink.py PORT DIR

Listens on 127.0.0.1:PORT, accepts every message and writes each one, as
received, to DIR/NNNNNN-PID.eml before it answers 250 (so a message the
client saw accepted is on disk). Prints "READY" once it listens. Runs until
killed.
"""
import asyncio
import itertools
import os
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        name = f"{n:06d}-{os.getpid()}.eml"
        tmp = os.path.join(self.directory, "." + name)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 OK"


async def main(port, directory):
    loop = asyncio.get_running_loop()
    handler = Sink(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", port
    )
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
