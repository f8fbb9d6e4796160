"""Python mirror of the shared price book segment layout, plus segment lifecycle helpers.

The C structs in ``ext/_pricebook.pxd`` are the source of truth; this module restates the
same numbers so the pure-Python twin, diagnostics and reports work without the compiled
module. ``tests/ext/test_pricebook.py`` asserts both agree field by field and byte by byte.

Lifecycle helpers (create / attach / reclaim / unlink) live here too because they are cold
paths shared verbatim by both implementations, and they are where the platform traps are
(resource tracker, half-initialised segments).
"""

from __future__ import annotations

import _posixshmem
import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import NamedTuple

log = logging.getLogger("tradestack.shm")

# --------------------------------------------------------------------------- constants
MAGIC_BYTES = b"TSPBOOK1"
MAGIC = int.from_bytes(MAGIC_BYTES, "little")
LAYOUT_VERSION = 1
CACHE_LINE = 64
SLOT_SIZE = 64
SYMBOL_WIDTH = 16
MAX_SYMBOL_LEN = SYMBOL_WIDTH - 1
MAX_READERS = 16
READER_ENTRY_SIZE = 64
READER_NAME_MAX = 48
CONTROL_OFFSET = 64  # header line 1
READERS_OFFSET = 128  # reader table starts on header line 2
HEADER_SIZE = READERS_OFFSET + MAX_READERS * READER_ENTRY_SIZE  # == symtab_offset (1152)
SYMTAB_OFFSET = HEADER_SIZE

STATE_FREE, STATE_AWAKE, STATE_SLEEPING = 0, 1, 2
# Seconds a write waits for the writers' lock before it is skipped (the critical section is a
# few stores: a lock held this long is held by something that is not writing).
LOCK_TIMEOUT_S = 0.01
STATE_NAMES = {STATE_FREE: "FREE", STATE_AWAKE: "AWAKE", STATE_SLEEPING: "SLEEPING"}

# Header line 0, little-endian, no implicit padding ("<").
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("magic", "Q"),
    ("layout_version", "I"),
    ("header_size", "I"),
    ("slot_size", "I"),
    ("nsymbols", "I"),
    ("symtab_offset", "I"),
    ("slots_offset", "I"),
    ("symbol_width", "I"),
    ("max_readers", "I"),
    ("owner_pid", "Q"),
    ("created_ns", "q"),
    ("heartbeat_ns", "q"),
)
CONTROL_FIELDS: tuple[tuple[str, str], ...] = (("publish_seq", "I"), ("sleepers", "I"))
READER_FIELDS: tuple[tuple[str, str], ...] = (
    ("state", "I"),
    ("pid", "I"),
    ("name_len", "I"),
    ("pad", "I"),
    ("name", f"{READER_NAME_MAX}s"),
)
SLOT_FIELDS: tuple[tuple[str, str], ...] = (
    ("seq", "Q"),
    ("price", "d"),
    ("sent_ns", "q"),
    ("tick_seq", "Q"),
    ("write_ns", "q"),
)


def _offsets(fields: Sequence[tuple[str, str]]) -> dict[str, int]:
    out, pos = {}, 0
    for fname, fmt in fields:
        out[fname] = pos
        pos += struct.calcsize("<" + fmt)
    return out


HEADER_STRUCT = struct.Struct("<" + "".join(f for _, f in HEADER_FIELDS))
HEADER_OFFSETS = _offsets(HEADER_FIELDS)
CONTROL_OFFSETS = _offsets(CONTROL_FIELDS)
READER_OFFSETS = _offsets(READER_FIELDS)
SLOT_OFFSETS = _offsets(SLOT_FIELDS)
SLOT_PAYLOAD = struct.Struct("<dqQq")  # price, sent_ns, tick_seq, write_ns
assert HEADER_STRUCT.size == CACHE_LINE
assert struct.calcsize("<" + "".join(f for _, f in READER_FIELDS)) == READER_ENTRY_SIZE


def _round_up(n: int, to: int = CACHE_LINE) -> int:
    return (n + to - 1) // to * to


def symtab_size(nsymbols: int) -> int:
    """Symbol table bytes, padded so the slots start on a fresh cache line."""
    return _round_up(nsymbols * SYMBOL_WIDTH)


def slots_offset(nsymbols: int) -> int:
    return SYMTAB_OFFSET + symtab_size(nsymbols)


def segment_size(nsymbols: int) -> int:
    """Exact byte size of a book for ``nsymbols`` symbols."""
    if nsymbols < 1:
        raise ValueError("nsymbols must be >= 1")
    return slots_offset(nsymbols) + nsymbols * SLOT_SIZE


def footprint(nsymbols: int) -> dict[str, int]:
    """Memory accounting for reports: fixed header vs per-symbol cost."""
    total = segment_size(nsymbols)
    slot_bytes = nsymbols * SLOT_SIZE
    return {
        "nsymbols": nsymbols,
        "header_bytes": HEADER_SIZE,
        "symtab_bytes": symtab_size(nsymbols),
        "slot_bytes": slot_bytes,
        "total_bytes": total,
        "bytes_per_symbol": SLOT_SIZE + SYMBOL_WIDTH,
        "cache_lines": total // CACHE_LINE,
    }


# --------------------------------------------------------------------------- validation
class LayoutError(Exception):
    """The segment is not a price book this code can read (says which field mismatched)."""


class ReaderLost(RuntimeError):
    """A PriceReader's entry in the segment is no longer its own (overwritten or reset): the
    reader is stale and re-attaches (ext.segment.SegmentWatcher)."""


def expected_header(nsymbols: int) -> dict[str, int]:
    """The immutable header line 0 fields of a book for `nsymbols` symbols."""
    return {
        "magic": MAGIC, "layout_version": LAYOUT_VERSION, "header_size": HEADER_SIZE,
        "slot_size": SLOT_SIZE, "nsymbols": nsymbols, "symtab_offset": SYMTAB_OFFSET,
        "slots_offset": slots_offset(nsymbols), "symbol_width": SYMBOL_WIDTH,
        "max_readers": MAX_READERS,
    }


def validate_symbols(symbols: Iterable[str] | None) -> tuple[str, ...]:
    """Symbols are fixed-width ASCII keys; reject anything the table cannot round-trip."""
    if symbols is None:
        raise ValueError("symbols are required when create=True")
    if isinstance(symbols, str | bytes):
        raise TypeError("symbols must be a sequence of str, not a single string")
    out = tuple(symbols)
    if not out:
        raise ValueError("symbols must be non-empty")
    seen: set[str] = set()
    for s in out:
        if not isinstance(s, str):
            raise TypeError(f"symbol {s!r} is not a str")
        if not 1 <= len(s) <= MAX_SYMBOL_LEN:
            raise ValueError(f"symbol {s!r}: length must be 1..{MAX_SYMBOL_LEN}")
        if not (s.isascii() and s.isprintable()) or "," in s or "*" in s:
            raise ValueError(f"symbol {s!r}: must be printable ASCII without ',' or '*'")
        if s in seen:
            raise ValueError(f"duplicate symbol {s!r}")
        seen.add(s)
    return out


def encode_symtab(symbols: Sequence[str]) -> bytes:
    raw = b"".join(s.encode("ascii").ljust(SYMBOL_WIDTH, b"\0") for s in symbols)
    return raw.ljust(symtab_size(len(symbols)), b"\0")


def decode_symtab(raw: bytes, nsymbols: int) -> tuple[str, ...]:
    out = []
    for i in range(nsymbols):
        cell = raw[i * SYMBOL_WIDTH : (i + 1) * SYMBOL_WIDTH]
        name = cell.rstrip(b"\0")
        if b"\0" in name or not name:
            raise LayoutError(f"symbol table entry {i} is empty or not NUL padded: {cell!r}")
        try:
            out.append(name.decode("ascii"))
        except UnicodeDecodeError:
            raise LayoutError(f"symbol table entry {i} is not ASCII: {cell!r}") from None
    try:
        return validate_symbols(out)
    except (ValueError, TypeError) as exc:
        raise LayoutError(f"symbol table is invalid: {exc}") from None


def validate_header(h: dict, size: int) -> int:
    """Check a decoded header line 0 against this build; return nsymbols or raise LayoutError."""
    if h["magic"] != MAGIC:
        got = int(h["magic"]).to_bytes(8, "little")
        raise LayoutError(f"bad magic {got!r} (expected {MAGIC_BYTES!r}): not a price book")
    if h["layout_version"] != LAYOUT_VERSION:
        raise LayoutError(
            f"layout version mismatch: segment has {h['layout_version']}, "
            f"this build reads {LAYOUT_VERSION}"
        )
    if h["slot_size"] != SLOT_SIZE:
        raise LayoutError(f"slot size mismatch: segment has {h['slot_size']}, expected {SLOT_SIZE}")
    for fname, want in (
        ("header_size", HEADER_SIZE),
        ("symtab_offset", SYMTAB_OFFSET),
        ("symbol_width", SYMBOL_WIDTH),
        ("max_readers", MAX_READERS),
    ):
        if h[fname] != want:
            raise LayoutError(f"{fname} mismatch: segment has {h[fname]}, expected {want}")
    n = h["nsymbols"]
    if n < 1:
        raise LayoutError(f"symbols mismatch: segment declares nsymbols={n}")
    if h["slots_offset"] != slots_offset(n):
        raise LayoutError(
            f"slots_offset mismatch: segment has {h['slots_offset']}, expected {slots_offset(n)}"
        )
    if size < segment_size(n):
        raise LayoutError(
            f"segment size {size} too small for {n} symbols (needs {segment_size(n)})"
        )
    return n


def check_symbols(expected: Sequence[str] | None, found: tuple[str, ...]) -> None:
    if expected is not None and tuple(expected) != found:
        raise LayoutError(
            f"symbol list mismatch: expected {tuple(expected)!r}, segment has {found!r}"
        )


def decode_header_bytes(raw: bytes) -> dict:
    return dict(zip((n for n, _ in HEADER_FIELDS), HEADER_STRUCT.unpack_from(raw), strict=True))


# --------------------------------------------------------------------------- segments
_register_patch_lock = threading.Lock()


@contextlib.contextmanager
def _no_tracker_registration() -> Iterator[None]:
    # CPython < 3.13 (we run 3.11): SharedMemory(create=False) registers the name with this
    # process's resource_tracker, which *unlinks* it when the tracker exits, i.e. a reader
    # process started outside the writer's process tree destroys the writer's book on exit
    # (bpo-39959; 3.13 added track=False). Attaching must therefore not register. The patch
    # is process-global: a lock serialises our own attaches; an unrelated thread creating a
    # SharedMemory in this exact window would also skip registration (documented trade-off).
    with _register_patch_lock:
        saved = resource_tracker.register
        resource_tracker.register = lambda name, rtype: None
        try:
            yield
        finally:
            resource_tracker.register = saved


def attach_shm(name: str) -> SharedMemory:
    """Open an existing segment without tracker registration. FileNotFoundError if missing."""
    try:
        return SharedMemory(name=name, create=False, track=False)  # type: ignore[call-arg]
    except TypeError:  # Python < 3.13: no track= parameter
        pass
    with _no_tracker_registration():
        return SharedMemory(name=name, create=False)


def unlink_untracked(name: str) -> None:
    """shm_unlink without a resource_tracker UNREGISTER (which would log a KeyError there)."""
    _posixshmem.shm_unlink("/" + name)


def _proc_state(pid: int) -> bytes:
    """The state letter of /proc/PID/stat (b"" if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b") ", 1)[1][:1]
    except (OSError, IndexError):
        return b""


def pid_alive(pid: int) -> bool:
    """Liveness by kill(pid, 0); a zombie and an out-of-range pid (a garbage header) count
    as dead."""
    if not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return _proc_state(pid) != b"Z"


_INIT_GRACE_S = 0.25  # how long a zero/empty segment may take to get its header
# An owner that is alive but has not stamped its heartbeat for this long is not the process that
# created the segment (its pid was reused after a crash) or is hung: the segment is reclaimed. The
# OrderBook stamps every 0.5 s; a process that creates a book and never calls heartbeat() keeps
# its name only this long against a second creator.
HEARTBEAT_STALE_S = 5.0


class SegmentProbe(NamedTuple):
    """What an existing segment's header says, read as plain bytes (no attach, no reader)."""

    valid: bool            # a price book this build can read
    owner_pid: int
    created_ns: int        # CLOCK_MONOTONIC; with owner_pid, identifies one segment
    heartbeat_ns: int      # CLOCK_MONOTONIC of the owner's last heartbeat()
    why: str               # "valid", or what is wrong
    initialising: bool     # empty or magic still 0: maybe a creator mid-way
    symbols: tuple[str, ...] = ()   # the symbol table, when valid


def probe_segment(name: str) -> SegmentProbe | None:
    """The header of the segment called `name`, or None if there is none.

    ``initialising``: empty or magic still 0, i.e. possibly a creator between shm_open and
    its final magic store; a reclaimer gives it a grace period before calling it garbage.
    """
    try:
        shm = attach_shm(name)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # mmap refuses a size-0 segment (not truncated yet)
        return SegmentProbe(False, 0, 0, 0, f"unmappable ({exc})", True)
    try:
        if shm.size < CACHE_LINE:
            return SegmentProbe(False, 0, 0, 0, f"too small ({shm.size} bytes)", False)
        h = decode_header_bytes(bytes(shm.buf[:CACHE_LINE]))
        ids = (h["owner_pid"], h["created_ns"], h["heartbeat_ns"])
        try:
            n = validate_header(h, shm.size)
            raw = bytes(shm.buf[SYMTAB_OFFSET : SYMTAB_OFFSET + n * SYMBOL_WIDTH])
            symbols = decode_symtab(raw, n)
        except LayoutError as exc:
            return SegmentProbe(False, *ids, str(exc), h["magic"] == 0)
        return SegmentProbe(True, *ids, "valid", False, symbols)
    finally:
        shm.close()


def mapping_gone(shm: SharedMemory, name: str) -> str | None:
    """None while `name` still refers to the file `shm` maps, else why not.

    The creator compares inodes: its own file is open (it holds the fd), so tmpfs cannot hand
    that inode number to another file meanwhile, and a different inode at the name is another
    file. st_nlink 0 says the file was unlinked even if something new is already at the name.
    """
    own = os.fstat(shm._fd)  # type: ignore[attr-defined]
    if own.st_nlink == 0:
        return f"{name} was unlinked"
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, 0)
    except FileNotFoundError:
        return f"{name} was unlinked"
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
        return f"{name} was replaced by another file"
    return None


def pid_stopped(pid: int) -> bool:
    """True if `pid` is stopped (SIGSTOP, a debugger): silent, but not dead or reused."""
    return _proc_state(pid) in (b"T", b"t")


def segment_owner(name: str) -> int | None:
    """owner_pid of the valid price book called `name` (read as probe_segment reads it), or
    None if there is none or it is not a book this build reads."""
    probe = probe_segment(name)
    return probe.owner_pid if probe is not None and probe.valid else None


def stale_owner(probe: SegmentProbe, now_ns: int | None = None) -> str | None:
    """Why a valid segment's owner no longer holds it (dead, or alive with a heartbeat older
    than HEARTBEAT_STALE_S: the pid was reused), or None if the owner still holds it."""
    pid = probe.owner_pid
    if not pid_alive(pid):
        return f"owner pid {pid} is dead"
    now = time.monotonic_ns() if now_ns is None else now_ns
    age = (now - probe.heartbeat_ns) / 1e9
    if age < HEARTBEAT_STALE_S or pid_stopped(pid):
        return None
    return (f"owner pid {pid} is alive but its heartbeat is {age:.1f}s old "
            f"(> {HEARTBEAT_STALE_S:g}s: the pid was reused, or the owner hung)")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or len(name) > 200:
        raise ValueError(f"invalid shared memory name {name!r}")
    return name


def create_shm(name: str, size: int) -> tuple[SharedMemory, bool]:
    """Create the segment (mode 0600, as SharedMemory does); reclaim it if garbage or a stale
    owner (dead, or alive with a heartbeat older than HEARTBEAT_STALE_S) holds the name.

    Returns (shm, reclaimed). The created segment IS tracker-registered, so the standard
    library unlinks it if this process tree dies without cleaning up.
    """
    try:
        return SharedMemory(name=name, create=True, size=size), False
    except FileExistsError:
        pass
    deadline = time.monotonic() + _INIT_GRACE_S
    while True:
        probe = probe_segment(name)
        if probe is None or not probe.initialising or time.monotonic() >= deadline:
            break
        time.sleep(0.005)  # a concurrent creator is probably still writing the header
    if probe is None:  # vanished meanwhile: the name is free
        return SharedMemory(name=name, create=True, size=size), False
    reason = stale_owner(probe) if probe.valid else f"invalid header: {probe.why}"
    if reason is None:
        raise FileExistsError(
            f"shared price book {name!r} already exists and its owner pid {probe.owner_pid} is "
            "alive; attach with create=False or choose another name"
        )
    # A creator stalled for longer than the grace period between shm_open and its magic
    # store would lose its segment here; names have a single owner by construction.
    log.warning("reclaiming stale shared price book %r (%s)", name, reason)
    with contextlib.suppress(FileNotFoundError):
        unlink_untracked(name)
    return SharedMemory(name=name, create=True, size=size), True

