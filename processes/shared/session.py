"""Order-log sessions: which records of logs/orders.jsonl are this run's.

One `python main.py` is one session: its id is in every order-log record, and the OrderManager
rebuilds dedup, positions and PnL from its own session's records only. main.py picks the id
(a new one, or with --resume the log's last) and hands it to its children in TRADESTACK_SESSION,
so an OrderManager the supervisor restarts continues the same session.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from processes.shared.journal import journal_dir, read_records

SESSION_ENV = "TRADESTACK_SESSION"


def new_session_id() -> str:
    """A fresh session id: readable (when it started) and unique per starting process."""
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def last_session(path: Path) -> str | None:
    """The session of the order log's last record ("" for a log older than sessions), or None
    for no log or no record: what --resume continues. The last record is the order journal's
    when it holds any (an OrderManager killed before it mirrored them into the JSONL)."""
    session = None
    for payload in reversed(read_records(journal_dir(path))[0]):
        try:
            rec = json.loads(payload)
        except ValueError:
            continue
        if isinstance(rec, dict):
            got = rec.get("session", "")
            return got if isinstance(got, str) else ""
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw) if raw.strip() else None
            except ValueError:
                continue     # a torn tail: OrderLog.open() reports (and cuts) it
            if isinstance(rec, dict):
                got = rec.get("session", "")
                session = got if isinstance(got, str) else ""
    return session


def choose_session(order_log: Path, resume: bool, inherit: bool = True) -> str:
    """The session of a starting stack or OrderManager: the inherited TRADESTACK_SESSION (when
    inherit: a supervised child), else with resume the log's last session, else a new one."""
    inherited = os.environ.get(SESSION_ENV, "") if inherit else ""
    if inherited:
        return inherited
    if resume:
        last = last_session(order_log)
        if last is not None:
            return last
    return new_session_id()
