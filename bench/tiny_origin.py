#!/usr/bin/env python3
"""A cheap HTTP/1.1 origin for bench/budget.sh when nginx is not installed.

Answers every request on 127.0.0.1:PORT with the same file (200, text/plain,
Content-Length), keeping connections alive; pipelined requests are answered
in order. Only bodiless requests (GET, HEAD) are expected, which is all the
budget sends. One asyncio loop, no parsing beyond finding the end of each
request head, so that it costs far less per request than the proxy in front.
"""

import argparse
import asyncio
import email.utils


class Origin(asyncio.Protocol):
    def __init__(self, head, body):
        self.head = head
        self.body = body
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            request = self.buf[:end]
            self.buf = self.buf[end + 4:]
            out.append(self.head)
            if not request.startswith(b"HEAD "):
                out.append(self.body)
        if out:
            self.transport.write(b"".join(out))
        if len(self.buf) > 65536:  # not a request head: give up
            self.transport.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True)
    args = parser.parse_args()
    with open(args.file, "rb") as f:
        body = f.read()
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Server: tiny-origin\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Origin(head, body), "127.0.0.1", args.port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
