"""OrderManager: TCP server for Strategy clients; validates, numbers, acknowledges and books orders.

A session starts with a handshake: the client's first frame is a hello (protocol version, client
name, token); the answer is a welcome, or a refused frame and a close. With no token configured
a first frame that is not a hello is an implicit hello: the frame is taken as the first order,
booked under a name made from the peer ("peer-127.0.0.1-54321"; dedup is per connection then,
because a reconnect has a new port). Then, per order:

1. dedup: an id this client already booked (this run or, read back from the order log, an
   earlier one) is acked again with the SAME order_no and nothing else happens, so a Strategy
   may resend every unacknowledged order after a reconnect without booking anything twice;
2. kill switch (SIGUSR1 toggles it): while on, every new order is rejected;
3. pre-trade risk: max_notional, max_position (per client and symbol), max_order_rate (per
   client, sliding 1 s window); a reject names the rule;
4. the order is numbered and booked: its JSON record is committed to the order journal, a
   preallocated memory-mapped file (processes.shared.journal: two stores into the page cache,
   no system call; an msync too if fsync is configured), THEN the ack. An ack therefore means
   "in the kernel's page cache" (or "on disk" with fsync), so killing the OrderManager can
   never lose an order it acked (an ack sent before the commit would be lost to a SIGKILL
   landing between the two). The same line goes to the JSONL order log and the console line
   to the log a moment after the ack (_flush_lines), both write(2)s off the order's path.

Steps 1-4 for the canonical order frame (the one the Strategy writes) are native, ext.OrderDesk,
while no kill switch, risk limit or fsync could refuse or delay the order: a welcomed client's
reads go whole to its ext.DeskSession, which frames them and books and acks each such frame with
no Python call between the read and the ack (its send() goes straight to the socket the
connection lends it while nothing is queued: reactor.Connection.set_direct). Any other frame,
and any order the desk declines (a duplicate, a reject, a full journal chunk), takes the Python
path, which names every reject.

The order log is the OrderManager's memory: on start it is read back, numbering continues after
the last order_no, and the booked ids, net positions and PnL are rebuilt from the records of the
current session only. Every record names its session; a session is one `python main.py` (or one
standalone start): a new run starts a new one, so yesterday's fills are not today's positions.
The session is, in this order: TRADESTACK_SESSION (set by main.py for its children, so an
OrderManager the supervisor restarts continues its session, dedup and all), else with
order_manager.resume (main.py --resume) the log's last session, else a new one.
"""

from __future__ import annotations

import fcntl
import functools
import hmac
import logging
import os
import signal
import socket
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

import msgspec

from ext import DeskSession, OrderDesk
from ext.segment import SegmentWatcher
from processes.shared import config as config_mod
from processes.shared import exposure, protocol, runtime
from processes.shared.errors import OperatorError
from processes.shared.journal import Journal, journal_dir, read_records
from processes.shared.pnl import PnLBook
from processes.shared.protocol import (
    MAX_FRAME,
    MESSAGE_DELIMITER,
    PROTOCOL_VERSION,
    SIDES,
    IdEcho,
    Order,
    ProtocolError,
    decode_hello,
    decode_json,
    decode_order,
    encode_ack,
    encode_order,
    encode_refused,
    encode_reject,
    encode_welcome,
    not_an_order_reason,
)
from processes.shared.session import choose_session
from processes.shared.telemetry import Recorder
from reactor import Backoff, Connection, Reactor, Server

log = logging.getLogger("order_manager")

LOGGED_REJECTS = 20  # rejects logged one by one; the rest only counted (a garbage flood
                     # must not turn into a console and disk flood that stalls every client)
LOGGED_REFUSALS = 20  # the same for refused handshakes (a reconnect loop with a bad token)
REFUSE_LINGER = 1.0   # seconds a refused client is kept (input discarded) before the close, so
                      # the refused frame is read before the connection goes
KILL_SWITCH_REASON = "kill switch on"
RISK_RULES = ("kill_switch", "max_notional", "max_position", "max_order_rate")
SECOND_NS = 1_000_000_000
MIRROR_RETRY = 1.0    # s between retries of a failed order-log (JSONL) write
LINE_DELAY = 0.001    # s: "Received Order" lines are printed this long after the ack, batched
# Bytes read from one client per readable event, i.e. per reactor turn. Every ready client gets
# one read a turn, in turn, so this bounds how long one client's backlog (a flood) can keep the
# others' orders waiting: about a hundred small orders, not the hundreds of a 64 KiB read
# (bench/bench_flood.py, the Strategy's acks during a flood). The smallest the framer allows.
READ_CAPACITY = 2 * MAX_FRAME


def _says_hello(frame: memoryview) -> bool:
    """Whether a first frame that is not a valid hello meant to be one (then it is refused
    with the reason; anything else, without a token, is an implicit hello)."""
    try:
        return decode_json(frame).get("type") == "hello"
    except ProtocolError:
        return False


class OrderLogError(OperatorError, RuntimeError):
    """The order log is in use, damaged before its last line, or cannot take its journal."""


class OrderLog:
    """The booked orders: a memory-mapped journal (processes.shared.journal), the durable record
    committed before the ack, and its human-readable mirror, the JSONL file (one line per order),
    written after the ack, off the hot path (OrderManager._flush_lines, a moment later).

    Both hold the same JSON text per order. The mirror is what people and tools read and what
    start-up reads back; the journal holds only what this run booked, so after a kill -9 the
    orders acked but not yet mirrored are there: open() appends them to the mirror (the orders
    past its last order_no) before starting a fresh journal. A clean close mirrors everything
    and removes the journal.

    The mirror's own rules: a crash can only leave a torn LAST line (the process died inside a
    write); that line is skipped with a warning and cut off, so the next record starts on a
    line of its own. A bad line anywhere else is not a crash artefact, and starting on a log we
    cannot trust could book an order twice, so it is fatal and names the line.
    """

    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.journal = Journal(journal_dir(path), sync=fsync)
        # commit(order_no, received_ns, fields, frame): one order's record into the journal,
        # durable when it returns (the hot path: the journal's own method, no wrapper). OSError
        # (no journal chunk can be made: disk full) means nothing was committed.
        self.commit = self.journal.commit_order
        self._file: IO[bytes] | None = None
        self._fd = -1
        self.size = 0  # bytes of whole lines: where a failed mirror write is cut back to
        self._unmirrored: list[bytes] = []   # committed to the journal, not yet in the JSONL
        self._opened = False   # open() finished: the journal is this run's, close() may end it
        self.mirror_failed: str | None = None  # the last mirror write's error, until one works

    def open(self) -> list[dict[str, Any]]:
        """Lock the log (one OrderManager per log: another one's start would cut its tail,
        copy its journal and remove it while it runs), read the records back (repairing a
        torn tail, mirroring what only the journal holds), then start a fresh journal."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (closed in close())
        self._fd = self._file.fileno()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise OrderLogError(f"order log {self.path} is in use by another OrderManager "
                                "(it holds the lock); stop that one first, or give this one "
                                "another order_manager.order_log") from None
        records = self._read_back()
        self.size = os.fstat(self._fd).st_size
        records += self._recover_journal(max((r["order_no"] for r in records), default=0))
        self.journal.open()
        self._opened = True
        return records

    def _recover_journal(self, mirrored_up_to: int) -> list[dict[str, Any]]:
        """The journal's records past the mirror's last order_no (acked, then the process died
        before mirroring them), appended to the mirror; the journal is removed after that."""
        payloads, torn = read_records(self.journal.directory)
        if torn:
            log.warning("order journal %s: %d torn record(s) at its end (a write cut short by a "
                        "crash, never acked) ignored", self.journal.directory, torn)
        missing: list[dict[str, Any]] = []
        lines: list[bytes] = []
        for payload in payloads:
            try:
                rec = parse_record(payload)
            except ValueError as exc:   # its checksum matched: written so by a writer, not torn
                raise OrderLogError(f"order journal {self.journal.directory} holds a record "
                                    f"that is not an order ({exc}); fix or move it before "
                                    "starting") from None
            if rec["order_no"] > mirrored_up_to:
                missing.append(rec)
                lines.append(payload)
        if lines:
            self._unmirrored = lines
            self.mirror()
            if self.mirror_failed:
                raise OrderLogError(f"order log {self.path}: the journal's {len(lines)} orders "
                                    f"could not be copied into it ({self.mirror_failed})")
            if self.fsync:
                os.fsync(self._fd)
            log.warning("order log %s: %d orders committed before a crash recovered from the "
                        "journal %s",
                        self.path, len(lines), self.journal.directory)
        return missing

    def _read_back(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        good_end = 0          # bytes of the file made of good lines
        needs_newline = False
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    good_end += len(raw)
                    continue
                try:
                    records.append(parse_record(raw))
                except ValueError as exc:
                    if fh.read(1):  # more after it: not a torn tail
                        raise OrderLogError(
                            f"order log {self.path} line {lineno} is corrupt ({exc}); "
                            "fix or move the file before starting") from None
                    log.warning("order log %s: last line %d is incomplete (%s), skipped: %r",
                                self.path, lineno, exc, raw[:200])
                    break
                good_end += len(raw)
                needs_newline = not raw.endswith(b"\n")
        if good_end < self.path.stat().st_size:
            os.truncate(self.path, good_end)
        if needs_newline:  # a whole record whose newline never made it to disk
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
        return records

    def mirror(self) -> None:
        """Off the hot path: the committed records not yet in the JSONL, in one write(2) (an
        fsync too if configured), then the journal's chunks already left are removed. On
        OSError any partial line is cut off and the records wait for the next call; the journal
        keeps them meanwhile."""
        self._unmirrored += self.journal.take()
        lines = self._unmirrored
        if not lines or self._file is None:
            return
        data = b"\n".join(lines) + b"\n"
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # regular files write all at once, barring errors
                written += os.write(self._fd, data[written:])
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                pass
            if self.mirror_failed is None:
                log.error("order log %s: write failed (%s); the orders are safe in the journal "
                          "%s, retrying", self.path, exc, self.journal.directory)
            self.mirror_failed = str(exc)
            return
        if self.mirror_failed is not None:
            log.info("order log %s written again", self.path)
            self.mirror_failed = None
        self.size += len(data)
        self._unmirrored = []
        self.journal.release()   # the chunks already left are all in the mirror now

    def close(self) -> None:
        """Mirror what is left; the journal is removed only when the mirror holds all of it.
        After a failed open() the journal is left as it is: it may hold orders not yet
        recovered."""
        if self._file is not None and self._opened:
            self.mirror()
            if self._unmirrored:
                log.error("order log %s: %d orders could not be mirrored; kept in the journal "
                          "%s for the next start", self.path, len(self._unmirrored),
                          self.journal.directory)
                self.journal.close()
            else:
                self.journal.discard()
        if self._file is not None:
            self._file.close()
            self._file = None
            self._fd = -1
        self._opened = False


def parse_record(raw: bytes) -> dict[str, Any]:
    """One order-log line -> its record; ValueError names what is wrong."""
    try:
        rec = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    order_no, oid, client = rec.get("order_no"), rec.get("id"), rec.get("client", "")
    if isinstance(order_no, bool) or not isinstance(order_no, int) or order_no <= 0:
        raise ValueError(f"bad order_no {order_no!r}")
    if not isinstance(oid, str) or not oid or not isinstance(client, str):
        raise ValueError("bad id or client")
    qty = rec.get("qty")
    if rec.get("side") not in SIDES or not isinstance(rec.get("symbol"), str) or isinstance(
            qty, bool) or not isinstance(qty, int) or qty <= 0:
        raise ValueError("bad symbol, side or qty")
    rec["client"] = client
    if not isinstance(rec.get("session", ""), str):
        raise ValueError("bad session")
    rec["session"] = rec.get("session", "")
    return rec


class Session:
    """One client connection: who it is (after its hello) and how much garbage it sent."""

    __slots__ = ("conn", "client", "welcomed", "closing", "bad_streak", "record_fields")

    def __init__(self, conn: Connection, session_json: bytes) -> None:
        self.conn = conn
        # The order-log fields that are the same for every order of this connection, as JSON
        # text made once: the hot path only formats the order's own.
        self.record_fields = b'"peer":%s,"session":%s,' % (msgspec.json.encode(conn.peer),
                                                           session_json)
        self.client = ""
        self.welcomed = False
        self.closing = False  # refused: input is discarded until the close
        self.bad_streak = 0   # consecutive malformed frames


class OrderManager:
    """Books every valid order exactly once per (client, id) and answers every frame."""

    def __init__(self, reactor: Reactor, cfg: config_mod.Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        om = cfg.order_manager
        self.symbols = frozenset(cfg.market.symbols)
        self.token = config_mod.effective_token(om.token)
        self.max_position = om.max_position
        self.max_order_rate = om.max_order_rate
        self.max_notional = om.max_notional
        self._risk_limits = bool(om.max_position or om.max_order_rate or om.max_notional)
        self.max_bad_frames = om.max_bad_frames
        self.kill_switch = om.kill_switch
        self.server: Server | None = None
        self.order_log = OrderLog(Path(om.order_log), om.fsync)
        self.resume = om.resume
        self.session = ""      # chosen in start(), from the environment or the log
        self._session_json = b'""'
        self.booked: dict[tuple[str, str], int] = {}     # (client, id) -> order_no
        # The native order path (ext.OrderDesk): a canonical, valid, new order is booked in one
        # call; used only while nothing else may refuse an order (_use_desk). It holds the order
        # numbers (order_no), so its sessions number the orders they book themselves.
        self._desk = OrderDesk(protocol, self.symbols, self.booked, self.order_log.journal)
        self.positions: dict[tuple[str, str], int] = {}  # (client, symbol) -> net qty
        self._rate: dict[str, deque[int]] = {}           # client -> receive times, last 1 s
        self.orders = 0        # booked by this run
        self.replayed = 0      # read back from the order log on start
        self.rejects = 0
        self.rule_rejects = dict.fromkeys(RISK_RULES, 0)
        self.duplicates = 0
        self.refused = 0
        self.bad_clients = 0   # closed for max_bad_frames malformed frames in a row
        self.clients = 0
        self.tick_to_order = Recorder("tick_to_order")   # Gateway send -> order received here
        self.send_to_order = Recorder("send_to_order")   # Strategy send -> received (one hop)
        self.order_to_ack_sent = Recorder("om_ack")      # received -> ack handed to the kernel
        # The phases of om_ack, each from the same receive time: decoded, then validated and
        # risk-checked, then the order-log write(2) returned.
        self.order_decoded = Recorder("om_decoded")
        self.order_checked = Recorder("om_checked")
        self.order_journaled = Recorder("om_journaled")
        # Fills at the order price, marked to the latest shared-memory price (off the hot path:
        # marks are read when stats are published).
        self.pnl = PnLBook()
        self.marks = SegmentWatcher(cfg.market.shm_name, Backoff(initial=0.1, maximum=2.0),
                                    symbols=cfg.market.symbols,
                                    max_jump=cfg.strategy.max_price_jump)
        # "Received Order ..." lines wait here and are printed a moment later, once the event
        # that booked them is done: on a shared core the client must get its ack first.
        self._lines: list[tuple[int, str, int, str, float]] = []
        self._flush_scheduled = False

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        exposure.check_order_manager(self.cfg, log)   # a refusal touches no order log
        self.session = choose_session(self.order_log.path, self.resume)
        self._session_json = msgspec.json.encode(self.session)
        self._replay(self.order_log.open())
        self._commit = self.order_log.commit   # bound once: the hot path's call
        self._use_desk()
        net = self.cfg.network
        # overflow="close": a client that stops reading acks is closed, never silently
        # short of an ack for an order we booked.
        self.server = Server(self.reactor, self.cfg.order_manager.listen, net.order_port,
                             self._on_client, max_frame=MAX_FRAME, overflow="close",
                             read_capacity=READ_CAPACITY)
        self.reactor.add_signal_handler(signal.SIGUSR1, self.toggle_kill_switch)
        if self.kill_switch:
            log.error("KILL SWITCH ON at start (order_manager.kill_switch): every new order is "
                      "rejected until SIGUSR1")
        return {"order_port": self.server.port, "order_log": str(self.order_log.path),
                "session": self.session,
                "replayed": self.replayed, "next_order_no": self.order_no + 1,
                "token_required": bool(self.token), "kill_switch": self.kill_switch}

    def close(self) -> None:
        self._flush_lines()
        if self.server is not None:
            self.server.close()
        self.order_log.close()
        self.marks.close()

    def recorders(self) -> tuple[Recorder, ...]:
        return (self.tick_to_order, self.send_to_order, self.order_decoded, self.order_checked,
                self.order_journaled, self.order_to_ack_sent)

    def stats(self) -> dict[str, Any]:
        return {"session": self.session,
                "orders": self.orders, "order_no": self.order_no, "replayed": self.replayed,
                "native_orders": self._desk.booked_here,
                "rejects": self.rejects, "duplicates": self.duplicates, "refused": self.refused,
                "bad_clients": self.bad_clients, "kill_switch": self.kill_switch,
                **{f"rejects_{rule}": n for rule, n in self.rule_rejects.items()},
                "clients": len(self.server.connections) if self.server else 0,
                **self.pnl.stats(self.marks.prices())}

    def _replay(self, records: list[dict[str, Any]]) -> None:
        """Rebuild numbering (from every record: order numbers stay unique in the file) and
        booked ids, positions and PnL (from this session's records) from the order log."""
        doubled = 0
        if records:
            self.order_no = max(rec["order_no"] for rec in records)
        earlier = len(records)
        records = [rec for rec in records if rec["session"] == self.session]
        earlier -= len(records)
        for rec in records:
            key = (rec["client"], rec["id"])
            if key in self.booked:
                doubled += 1  # a log written by hand, or by a tool that does not deduplicate
                continue
            self.booked[key] = rec["order_no"]
            pkey = (rec["client"], rec["symbol"])
            signed = rec["qty"] if rec["side"] == "BUY" else -rec["qty"]
            self.positions[pkey] = self.positions.get(pkey, 0) + signed
            self.pnl.on_fill(rec["client"], rec["symbol"], rec["side"], rec["qty"], rec["price"])
            self.order_no = max(self.order_no, rec["order_no"])
        self.replayed = len(records)
        if records:
            log.info("order log %s: %d orders of session %s read back, numbering continues at "
                     "%d; %d positions rebuilt", self.order_log.path, len(records), self.session,
                     self.order_no + 1, len(self.positions))
        else:
            log.info("order log %s: new session %s, numbering continues at %d",
                     self.order_log.path, self.session, self.order_no + 1)
        if earlier:
            log.info("order log %s: %d orders of earlier sessions left out (main.py --resume "
                     "continues the last session)", self.order_log.path, earlier)
        if doubled:
            log.warning("order log %s books %d ids more than once; the first booking counts",
                        self.order_log.path, doubled)

    @property
    def order_no(self) -> int:
        """The last number given (continues the order log's)."""
        return self._desk.order_no

    @order_no.setter
    def order_no(self, value: int) -> None:
        self._desk.order_no = value

    def _use_desk(self) -> None:
        """The desk books only what nothing else could refuse: not with the kill switch on, a
        risk limit set, or an fsync'ed journal (its records need an msync the desk does not do)."""
        allowed = not (self.kill_switch or self._risk_limits or self.order_log.fsync)
        self._desk.enabled = allowed

    def toggle_kill_switch(self) -> None:
        """SIGUSR1: flip the kill switch; loud, because it stops all trading."""
        self.kill_switch = not self.kill_switch
        self._use_desk()
        if self.kill_switch:
            log.error("KILL SWITCH ON: every new order is rejected until the next SIGUSR1")
        else:
            log.warning("KILL SWITCH OFF (SIGUSR1): accepting orders again")

    # --- sessions --------------------------------------------------------------------------------
    def _on_client(self, conn: Connection) -> None:
        self.clients += 1
        sess = Session(conn, self._session_json)
        conn.on_frame = lambda frame: self._on_frame(sess, frame)
        conn.on_close = self._on_close
        log.info("order client %s connected", conn.peer)

    def _on_close(self, conn: Connection, reason: str | None) -> None:
        log.info("order client %s gone (%s)", conn.peer, reason or "closed by peer")

    def _on_frame(self, sess: Session, frame: memoryview) -> None:
        if sess.welcomed:
            self._on_order(sess, frame)
        elif not sess.closing:
            self._on_hello(sess, frame)

    def _on_hello(self, sess: Session, frame: memoryview) -> None:
        """The first frame: a hello with our version, a good name and the token, or refused.

        Without a token anything else is an implicit hello (see the module docstring): a client
        written from the frame format alone can trade, and its first frame is answered as an
        order (ack or reject), never by a refusal it would not understand.
        """
        try:
            hello = decode_hello(frame)
        except ProtocolError as exc:
            if not self.token and not _says_hello(frame):
                self._implicit_hello(sess, frame)
                return
            self._refuse(sess, str(exc))
            return
        if hello.version != PROTOCOL_VERSION:
            self._refuse(sess, f"protocol version {hello.version} not supported "
                               f"(this OrderManager speaks {PROTOCOL_VERSION})")
            return
        if self.token and not hmac.compare_digest(hello.token.encode(), self.token.encode()):
            self._refuse(sess, f"bad token for client {hello.client}")
            return
        sess.client = hello.client
        self._welcome(sess)
        sess.conn.send(encode_welcome(hello.client, self.kill_switch))
        log.info("order client %s is %s (protocol %d)", sess.conn.peer, hello.client,
                 hello.version)

    def _welcome(self, sess: Session) -> None:
        """From now on every frame is an order: each read goes whole to the session's desk
        consumer, which books what the desk may and hands the rest to _on_order (the frames
        after the hello in the read being dispatched now reach _on_frame, then _on_order)."""
        sess.welcomed = True
        conn = sess.conn
        desk = DeskSession(self._desk, sess.client, sess.record_fields, conn.send,
                           functools.partial(self._desk_booked, sess),
                           functools.partial(self._not_for_desk, sess), MAX_FRAME,
                           MESSAGE_DELIMITER)
        conn.on_data = desk.consume
        conn.set_direct(desk)   # its acks go straight to the socket while nothing is queued

    def _implicit_hello(self, sess: Session, frame: memoryview) -> None:
        sess.client = "peer-" + sess.conn.peer.replace(":", "-").replace("[", "").replace("]", "")
        self._welcome(sess)
        log.info("order client %s sent no hello: booked as %s", sess.conn.peer, sess.client)
        self._on_order(sess, frame)

    def _refuse(self, sess: Session, reason: str) -> None:
        """Say why, stop listening to this client, and close it shortly after.

        The close is deferred (input discarded meanwhile) and our side is shut down for writing
        at once: closing a socket with unread input would send a reset, which can destroy the
        refused frame before the client reads it.
        """
        self.refused += 1
        if self.refused <= LOGGED_REFUSALS:
            log.warning("refused order client %s: %s", sess.conn.peer, reason)
        elif self.refused == LOGGED_REFUSALS + 1:
            log.warning("more refusals follow; only counted from now on (see the stats line)")
        sess.welcomed = False
        sess.closing = True
        conn = sess.conn
        conn.send(encode_refused(reason))
        conn.on_data = None
        conn.on_frame = None
        if not conn.closed and not conn.pending:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self.reactor.call_later(REFUSE_LINGER, conn.close, f"refused: {reason}")

    # --- orders (hot path) -----------------------------------------------------------------------
    def _desk_booked(self, sess: Session, received_ns: int, journaled_ns: int,
                     acked_ns: int) -> bool:
        """After the desk booked an order and its ack was sent; True: stop reading this client
        (its connection is gone)."""
        self.order_to_ack_sent.record(acked_ns - received_ns)
        self.order_journaled.record(journaled_ns - received_ns)
        sess.bad_streak = 0
        self._booked(self._desk.last_order(), received_ns)
        return sess.conn.closed

    def _not_for_desk(self, sess: Session, frame: memoryview) -> bool:
        """A frame the desk declined: the Python path's; True: stop reading this client."""
        self._on_order(sess, frame)
        return sess.closing or sess.conn.closed

    def _on_order(self, sess: Session, frame: memoryview) -> None:
        now = time.monotonic_ns
        received_ns = now()
        conn = sess.conn
        try:
            order = decode_order(frame, self.symbols)
        except ProtocolError as exc:
            reason = str(exc)
            if reason.startswith("malformed JSON") or reason == "expected a JSON object":
                reason = not_an_order_reason(frame, reason)   # tell a CSV client the protocol
            self._malformed(sess, exc.id, reason)
            return
        # Phase stamps are taken on the way and recorded after the ack: a record() call can wait.
        decoded_ns = now()
        sess.bad_streak = 0
        client = order.client = sess.client  # booked under the name of the hello
        done = self.booked.get((client, order.id))
        if done is not None:  # a resend of a booked order: same number, nothing booked
            self.duplicates += 1
            conn.send(encode_ack(order.id, done))
            return
        if self.kill_switch:
            self._reject_rule(conn, order.id, "kill_switch", KILL_SWITCH_REASON)
            return
        if self._risk_limits:
            before = self.positions.get((client, order.symbol), 0)
            after = before + order.qty if order.side == "BUY" else before - order.qty
            broken = self._risk(order, before, after, received_ns)
            if broken is not None:
                self._reject_rule(conn, order.id, *broken)
                return
        order_no = self.order_no + 1
        checked_ns = now()
        # The order's record, committed to the journal before the ack: {"order_no",
        # "received_ns", "peer", "session", **order.to_json()} as JSON text, the order's own
        # encoded frame wrapped with our fields, built and stored by one native call
        # (ext.journal_py.put_order). Inline, not a method: each Python call is microseconds
        # on a process woken cold.
        try:
            self._commit(order_no, received_ns, sess.record_fields, encode_order(order))
        except OSError as exc:
            self._commit_failed(sess, order, exc)
            return
        journaled_ns = now()
        self.order_no = order_no
        conn.send(encode_ack(order.id, order_no))
        self.order_to_ack_sent.record(now() - received_ns)
        self.order_decoded.record(decoded_ns - received_ns)
        self.order_checked.record(checked_ns - received_ns)
        self.order_journaled.record(journaled_ns - received_ns)
        self._booked(order, received_ns)

    def _booked(self, order: Order, received_ns: int) -> None:
        """After the ack of a booked order (either path): its id, position, rate window,
        latencies, fill and console line."""
        client = order.client
        self.booked[(client, order.id)] = self.order_no
        pkey = (client, order.symbol)
        before = self.positions.get(pkey, 0)
        self.positions[pkey] = before + order.qty if order.side == "BUY" else before - order.qty
        if self.max_order_rate:
            self._rate[client].append(received_ns)
        self.orders += 1
        # A client's stamps may be anything up to 2**64-1: only a plausible one (same host, same
        # clock, so not in our future) is a latency; a huge one would overflow the recorder.
        if 0 < order.tick_ns <= received_ns:
            self.tick_to_order.record(received_ns - order.tick_ns)
        if 0 < order.sent_ns <= received_ns:
            self.send_to_order.record(received_ns - order.sent_ns)
        self.pnl.on_fill(client, order.symbol, order.side, order.qty, order.price)
        self._lines.append((self.order_no, order.side, order.qty, order.symbol, order.price))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # A timer, not call_soon: call_soon would still run before this process sleeps.
            self.reactor.call_later(LINE_DELAY, self._flush_lines)

    def _flush_lines(self) -> None:
        """After the acks: the JSONL mirror of the orders just booked, the journal's next chunk
        if it is due, then the console lines."""
        self._flush_scheduled = False
        self.order_log.mirror()
        if self.order_log.mirror_failed and self.server is not None:   # retry until it works
            self._flush_scheduled = True
            self.reactor.call_later(MIRROR_RETRY, self._flush_lines)
        try:
            self.order_log.journal.prepare()
        except OSError as exc:   # disk full: the order that needs the chunk is rejected
            log.error("order journal: next chunk not made (%s)", exc)
        lines, self._lines = self._lines, []
        for line in lines:
            log.info("Received Order %d: %s %d %s @ %.2f", *line)

    def _risk(self, order: Order, before: int, after: int,
              now_ns: int) -> tuple[str, str] | None:
        """(rule, reason) of the first pre-trade limit the order breaks, else None.

        max_position lets an order through that brings the position closer to flat, so a
        lowered limit never traps a client in a position it may not reduce.
        """
        if self.max_notional:
            notional = order.qty * order.price
            if notional > self.max_notional:
                return "max_notional", (f"risk: max_notional {self.max_notional:g} exceeded for "
                                        f"{order.symbol} (order {notional:.2f})")
        if self.max_position and abs(after) > self.max_position and abs(after) > abs(before):
            return "max_position", (f"risk: max_position {self.max_position} exceeded for "
                                    f"{order.symbol} (would be {after})")
        if self.max_order_rate:
            window = self._rate.get(order.client)
            if window is None:
                window = self._rate[order.client] = deque()
            cutoff = now_ns - SECOND_NS
            while window and window[0] <= cutoff:
                window.popleft()
            if len(window) >= self.max_order_rate:
                return "max_order_rate", (f"risk: max_order_rate {self.max_order_rate}/s "
                                          f"exceeded for client {order.client}")
        return None

    def _commit_failed(self, sess: Session, order: Order, exc: OSError) -> None:
        """The order's record could not be committed: nothing can be booked safely. Reject,
        and turn the kill switch on until an operator has looked."""
        log.error("order log %s write failed (%s): order %s rejected", self.order_log.path,
                  exc, order.id)
        if not self.kill_switch:
            self.toggle_kill_switch()
        self._reject(sess.conn, order.id, f"order log write failed: {exc}")

    # --- rejects ---------------------------------------------------------------------------------
    def _malformed(self, sess: Session, order_id: IdEcho, reason: str) -> None:
        """Reject a frame that is not a valid order; close a client that sends nothing else."""
        self._reject(sess.conn, order_id, reason)
        sess.bad_streak += 1
        if self.max_bad_frames and sess.bad_streak >= self.max_bad_frames and not sess.closing:
            self.bad_clients += 1
            log.warning("closing order client %s (%s): %d malformed frames in a row",
                        sess.conn.peer, sess.client, sess.bad_streak)
            self._refuse(sess, f"{sess.bad_streak} malformed frames in a row")

    def _reject_rule(self, conn: Connection, order_id: str, rule: str, reason: str) -> None:
        self.rule_rejects[rule] += 1
        self._reject(conn, order_id, reason)

    def _reject(self, conn: Connection, order_id: IdEcho, reason: str) -> None:
        self.rejects += 1
        conn.send(encode_reject(order_id, reason))
        if self.rejects <= LOGGED_REJECTS:
            log.warning("rejected order %s from %s: %s", order_id, conn.peer, reason)
        elif self.rejects == LOGGED_REJECTS + 1:
            log.warning("more rejects follow; only counted from now on (see the stats line)")


def run(cfg: config_mod.Config, ready: Any = None, supervised: bool = False) -> int:
    return runtime.serve("order_manager", cfg, lambda r: OrderManager(r, cfg), ready,
                         supervised=supervised)


def main(argv: list[str] | None = None) -> int:
    cfg = runtime.cli("order_manager", "Order server: validates, acknowledges and logs orders.",
                      ("order_manager",), argv,
                      extra=(("network", "order_port"), ("order_manager", "resume")))
    return 0 if cfg is None else run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
