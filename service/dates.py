"""Times as a reader says them: "29 November 2026, 23:44 UTC", the time zone always stated.

Entries, blocks and tokens hold RFC 3339 times to the microsecond; a judge reads the day and
the minute. Pages and certificates show this form first and the exact value in the detail.
"""

from __future__ import annotations

from datetime import UTC, datetime

from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import InvalidInput
from copyledger.service.i18n import DEFAULT, gettext

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
FORMAT = "{day} {month} {year}, {hh}:{mm} UTC"  # a msgid: zh-CN says "2026年11月29日 23:44 UTC"


def human_time(value: str | datetime, lang: str = DEFAULT) -> str:
    """`value` in UTC as "29 November 2026, 23:44 UTC" (seconds dropped: the exact time stays
    in the record). Text that is not RFC 3339 comes back unchanged, never guessed at."""
    if isinstance(value, str):
        try:
            t = parse_timestamp(value).astimezone(UTC)
        except InvalidInput:
            return value
    else:
        t = value.astimezone(UTC)
    return gettext(lang, FORMAT).format(day=t.day, month=gettext(lang, MONTHS[t.month - 1]),
                                        year=t.year, hh=f"{t.hour:02d}", mm=f"{t.minute:02d}")
