"""Times as a reader says them: "29 November 2026, 23:44 UTC", the time zone always stated.

Entries, blocks and tokens hold RFC 3339 times to the microsecond; a judge reads the day and
the minute. Pages and certificates show this form first and the exact value in the detail.
"""

from __future__ import annotations

from datetime import UTC, datetime

from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import InvalidInput

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


def human_time(value: str | datetime) -> str:
    """`value` in UTC as "29 November 2026, 23:44 UTC" (seconds dropped: the exact time stays
    in the record). Text that is not RFC 3339 comes back unchanged, never guessed at."""
    if isinstance(value, str):
        try:
            t = parse_timestamp(value).astimezone(UTC)
        except InvalidInput:
            return value
    else:
        t = value.astimezone(UTC)
    return f"{t.day} {MONTHS[t.month - 1]} {t.year}, {t.hour:02d}:{t.minute:02d} UTC"
