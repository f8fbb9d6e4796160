"""The one kind of error a process reports in a line: the operator's, not the code's.

A start-up that fails on a bad setting, an unreadable price file or an order log another
OrderManager holds has a message that says what to fix; a traceback under it only hides that
line. Any other exception is a defect, and its traceback is what a bug report needs.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Raised for what the operator must fix; its message names the setting or file."""
