#!/usr/bin/env python3
"""Measure the queue on one TCP connection, server -> player, from both ends at once.

One process holds both ends (it enters each network namespace with setns(2) to make that
end's socket), so both byte counters are read at the same instant, with no clock to align:

  server  listens in SRV_NS, accepts ONE connection (routed straight from the player, or the
          agent's local connection) and sends bulk bytes as fast as the socket takes them;
  player  connects from PLAYER_NS, sends a Minecraft login handshake for HOST (the relay
          routes on it; a routed server simply never reads it) and then only reads.

Every SAMPLE_MS after WARMUP_S, for TIME_S, it records:
  queued   bytes the server's send() accepted minus bytes the player's recv() returned:
           everything between the two applications (every socket buffer, psock queue,
           emulated link and bottleneck buffer on the way);
  outq     SIOCOUTQ on the server's socket (unacknowledged + unsent) and its unsent part
           (SIOCOUTQNSD); inq: SIOCINQ on the player's socket;
  held     queued minus the server socket's SIOCOUTQ: what is past the server's own socket
           (relayed: everything the agent, the links and the relay hold; routed: the links
           beyond the server's in-flight bytes and the player's socket).
Prints one line of key=value: medians, p95 and max of queued, the medians of the others, the
player's read rate over the window (mbit) and the queue expressed in seconds at that rate.

  qprobe.py SRV_NS LISTEN_PORT PLAYER_NS CONNECT_IP:PORT HOST TIME_S WARMUP_S [SAMPLE_MS]
"""
import ctypes
import fcntl
import os
import select
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
SIOCINQ, SIOCOUTQ, SIOCOUTQNSD = 0x541B, 0x5411, 0x894B
libc = ctypes.CDLL(None, use_errno=True)


def enter(ns):
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns " + ns)
    finally:
        os.close(fd)


def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def handshake(host):
    h = host.encode()
    body = varint(0) + varint(767) + varint(len(h)) + h + struct.pack(">H", 25565) + varint(2)
    return varint(len(body)) + body


def ioctl_int(s, req):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), req, b"\0\0\0\0"))[0]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else 0


def main():
    srv_ns, port, ply_ns, target, host, dur, warm = sys.argv[1:8]
    sample = int(sys.argv[8]) / 1000.0 if len(sys.argv) > 8 else 0.1
    dur, warm = float(dur), float(warm)
    ip, tport = target.rsplit(":", 1)

    enter(srv_ns)
    lsn = socket.socket()
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind(("0.0.0.0", int(port)))
    lsn.listen(4)
    enter(ply_ns)
    ply = socket.create_connection((ip, int(tport)), timeout=10)
    ply.sendall(handshake(host))
    lsn.settimeout(15)
    srv, _ = lsn.accept()
    srv.setblocking(False)
    ply.setblocking(False)

    chunk = b"\xa5" * 65536
    wrote = read = 0
    t0 = time.monotonic()
    end = t0 + warm + dur
    next_sample = t0 + warm
    win_read0 = None
    q, outq, nsd, inq, held = [], [], [], [], []
    while True:
        now = time.monotonic()
        if now >= end:
            break
        r, w, _ = select.select([ply], [srv], [], max(0.0, min(next_sample, end) - now))
        if w:
            try:
                wrote += srv.send(chunk)
            except BlockingIOError:
                pass
        if r:
            while True:
                try:
                    n = len(ply.recv(262144))
                except BlockingIOError:
                    break
                if n == 0:
                    print("error=eof", flush=True)
                    return 1
                read += n
        now = time.monotonic()
        if now >= next_sample:
            if win_read0 is None:
                win_read0, win_t0 = read, now
            q.append(wrote - read)
            if os.environ.get("QPROBE_TRACE"):
                print("t=%.1f queued=%d outq=%d" % (now - t0, wrote - read,
                                                   ioctl_int(srv, SIOCOUTQ)), file=sys.stderr)
            outq.append(ioctl_int(srv, SIOCOUTQ))
            held.append(max(0, wrote - read - outq[-1]))
            nsd.append(ioctl_int(srv, SIOCOUTQNSD))
            inq.append(ioctl_int(ply, SIOCINQ))
            next_sample += sample
    secs = time.monotonic() - win_t0
    mbit = (read - win_read0) * 8 / secs / 1e6 if secs > 0 else 0
    qmed = pct(q, 0.5)
    print("mbit=%.2f queued_med=%d queued_p95=%d queued_max=%d queue_s=%.2f srv_outq_med=%d "
          "srv_unsent_med=%d player_inq_med=%d held_med=%d held_p95=%d samples=%d"
          % (mbit, qmed, pct(q, 0.95), max(q) if q else 0,
             qmed * 8 / (mbit * 1e6) if mbit else 0, pct(outq, 0.5), pct(nsd, 0.5),
             pct(inq, 0.5), pct(held, 0.5), pct(held, 0.95), len(q)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
