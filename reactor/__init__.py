"""Single-threaded epoll reactor shared by every tradestack process.

Never imports ``processes`` or ``ext``: they build on this, not the other way round.
"""

from .backoff import Backoff
from .connection import Connection
from .dialer import Dialer
from .framing import FrameReader, FrameTooLarge
from .loop import IdleSource, Reactor, Timer
from .server import Server

__all__ = [
    "Backoff",
    "Connection",
    "Dialer",
    "FrameReader",
    "FrameTooLarge",
    "IdleSource",
    "Reactor",
    "Server",
    "Timer",
]
