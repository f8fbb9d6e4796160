"""Socket options that let a dialled connection notice a peer that vanished without a close.

On one host a dead peer's kernel always closes its sockets. Across hosts a peer can disappear
silently (a power cut, a cable, a host restarted while the link was down): a reader that never
sends, like the OrderBook on the feed, would then wait on a half-open connection forever.
Keepalive probes after DEAD_PEER_IDLE s of silence, and TCP_USER_TIMEOUT on data the peer does
not acknowledge, turn that into a lost connection within about DEAD_PEER_TIMEOUT s, and the
Dialer's backoff redials it.
"""

from __future__ import annotations

import socket

DEAD_PEER_IDLE = 2      # seconds of silence before the first keepalive probe
DEAD_PEER_TIMEOUT = 6   # seconds without an answer (probe or data) before the connection is lost

DEAD_PEER_SOCKOPTS: tuple[tuple[int, int, int], ...] = tuple(
    (level, option, value) for level, name, value in (
        (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPIDLE", DEAD_PEER_IDLE),
        (socket.IPPROTO_TCP, "TCP_KEEPINTVL", 1),
        (socket.IPPROTO_TCP, "TCP_KEEPCNT", DEAD_PEER_TIMEOUT - DEAD_PEER_IDLE),
        (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", DEAD_PEER_TIMEOUT * 1000),
    ) if (option := getattr(socket, name, None)) is not None)
