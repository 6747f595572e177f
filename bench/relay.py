#!/usr/bin/env python3
"""Userspace TCP relay that adds a round-trip time between a client and a server.

Each chunk read from one side is written to the other side at
(arrival time + RTT/2), in order, so latency is added without capping
bandwidth (no queueing behind earlier chunks beyond their own delay).

The TCP handshake is emulated too: the client's connect() returns at once
on loopback, so nothing it sends is delivered before accept time + 1.5 RTT,
which is when its first bytes would reach the server after SYN / SYN-ACK /
ACK on a real path. A fetch through the relay therefore costs
1 RTT (TCP) + 1 RTT (TLS 1.3) + 1 RTT (request) plus transfer, as on a real
network, but TCP congestion control (slow start) is not modelled.

Usage: relay.py --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT --rtt-ms 50
"""

import argparse
import asyncio
import signal
import socket
import sys


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


async def pump(reader, writer, half, not_before, loop):
    """Copy reader -> writer, delivering each chunk half an RTT after it arrived."""
    queue = asyncio.Queue()

    async def read_side():
        try:
            while True:
                data = await reader.read(256 * 1024)
                queue.put_nowait((max(loop.time() + half, not_before), data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time(), b""))

    async def write_side():
        try:
            while True:
                when, data = await queue.get()
                delay = when - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    await asyncio.gather(read_side(), write_side())


async def handle(client_reader, client_writer, upstream, rtt):
    loop = asyncio.get_running_loop()
    accepted = loop.time()
    half = rtt / 2.0
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    for w in (client_writer, up_writer):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(
            # client -> server: first bytes arrive 1.5 RTT after connect start
            pump(client_reader, up_writer, half, accepted + rtt + half, loop),
            # server -> client
            pump(up_reader, client_writer, half, 0.0, loop),
        )
    finally:
        for w in (client_writer, up_writer):
            try:
                w.close()
            except Exception:
                pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--upstream", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--rtt-ms", type=float, required=True)
    ap.add_argument("--max-seconds", type=float, default=3600.0,
                    help="exit after this long in any case")
    args = ap.parse_args()
    host, port = hostport(args.listen)
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("relay: refusing to listen on a non-loopback address")
    upstream = hostport(args.upstream)
    rtt = args.rtt_ms / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream, rtt), host, port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relay listening on {args.listen} -> {args.upstream}, RTT {args.rtt_ms} ms",
          flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
