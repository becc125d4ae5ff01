"""Times as a reader says them: "29 November 2026, 23:44 UTC", the time zone always stated.

Entries, blocks and tokens hold RFC 3339 times to the microsecond; a judge reads the day and
the minute. Pages and certificates show this form first and the exact value in the detail.
`both_times` is the one form for a time line that a reader in another zone reads: the time
in the viewer's zone (Asia/Shanghai for zh-CN, else UTC, or the zone asked for) and in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from copyledger.ledger.entry import parse_timestamp
from copyledger.ledger.errors import InvalidInput, said
from copyledger.service.i18n import DEFAULT, gettext

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
FORMAT = "{day} {month} {year}, {hh}:{mm} UTC"  # a msgid: zh-CN says "2026年11月29日 23:44 UTC"
BOTH = "{local} ({zone} UTC{offset}) · {utc} UTC"  # a msgid; {zone} is ZONES' word or the name
ZONES = {"Asia/Shanghai": "Beijing time"}  # zones with a name readers use (msgids)
ZONE_OF = {"zh-CN": "Asia/Shanghai"}  # a language's default zone; UTC for the others
UTC_ALONE = "All times are in UTC (Coordinated Universal Time)."  # msgids: `times_note`'s
ZONE_AND_UTC = "Times are given in {zone} and in UTC (Coordinated Universal Time)."
# China has kept UTC+8 without summer time since 1991: a machine without the tz database
# still says Beijing time right.
_FIXED = {"Asia/Shanghai": timezone(timedelta(hours=8))}


def _utc(value: str | datetime) -> datetime | None:
    """`value` in UTC; None for text that is not RFC 3339."""
    if not isinstance(value, str):
        return value.astimezone(UTC)
    try:
        return parse_timestamp(value).astimezone(UTC)
    except InvalidInput:
        return None


def human_time(value: str | datetime, lang: str = DEFAULT) -> str:
    """`value` in UTC as "29 November 2026, 23:44 UTC" (seconds dropped: the exact time stays
    in the record). Text that is not RFC 3339 comes back unchanged, never guessed at."""
    t = _utc(value)
    if t is None:
        return str(value)
    return gettext(lang, FORMAT).format(day=t.day, month=gettext(lang, MONTHS[t.month - 1]),
                                        year=t.year, hh=f"{t.hour:02d}", mm=f"{t.minute:02d}")


def zone(lang: str = DEFAULT, tz: str | None = None) -> str:
    """The viewer's zone name: `tz` when given (an IANA name, checked), else the language's."""
    if tz:
        _tzinfo(tz)
        return tz
    return ZONE_OF.get(lang, "UTC")


def beside_utc(lang: str = DEFAULT, tz: str | None = None) -> str | None:
    """The zone a time line shows beside UTC (`zone`'s rule, `tz` checked); None when the
    viewer's zone is UTC itself, so the line is UTC alone."""
    name = zone(lang, tz)
    return None if name in ("UTC", "Etc/UTC") else name


def zone_word(name: str, lang: str = DEFAULT) -> str:
    """How a reader names the zone: ZONES' word in `lang` ("北京时间"), else its IANA name."""
    return gettext(lang, ZONES.get(name, name))


def times_note(lang: str, beside: str | None) -> str:
    """A page's word on how it gives times: UTC alone, or `beside` (the zone its time lines
    show beside UTC, `beside_utc`'s; None for UTC alone) and UTC. One sentence for the
    explorer's footer and the certificate, which built it twice from different inputs."""
    if beside is None:
        return gettext(lang, UTC_ALONE)
    return gettext(lang, ZONE_AND_UTC).format(zone=zone_word(beside, lang))


def _tzinfo(name: str) -> tzinfo:
    if name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        if len(name) > 64 or ".." in name or name.startswith("/"):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in _FIXED:
            return _FIXED[name]
        raise InvalidInput(said("tz: {zone} is not a time zone (an IANA name such as "
                                "Asia/Shanghai or UTC)", zone=repr(name[:64]))) from None


def both_times(value: str | datetime, lang: str = DEFAULT, tz: str | None = None) -> str:
    """`value` to the second in the viewer's zone and in UTC, e.g. "2026-11-30 10:05:03
    (北京时间 UTC+8) · 2026-11-30 02:05:03 UTC"; in UTC alone when that is the viewer's zone.
    Text that is not RFC 3339 comes back unchanged."""
    t = _utc(value)
    if t is None:
        return str(value)
    name = beside_utc(lang, tz)
    utc = t.strftime("%Y-%m-%d %H:%M:%S")
    if name is None:
        return f"{utc} UTC"
    try:
        local = t.astimezone(_tzinfo(name))
    except OverflowError:  # the last hours of year 9999 have no later local time
        return f"{utc} UTC"
    off = local.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hh, mm = divmod(abs(minutes), 60)
    offset = f"{sign}{hh}" + (f":{mm:02d}" if mm else "")
    return gettext(lang, BOTH).format(
        local=local.strftime("%Y-%m-%d %H:%M:%S"), zone=zone_word(name, lang),
        offset=offset, utc=utc)
