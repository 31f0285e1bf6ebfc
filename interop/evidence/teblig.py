"""eTebligat deemed-service time (Tebligat Kanunu 7/a; INTEROP-PROFILE.md §4 R-GW 4).

Service is deemed done at the end of the fifth day after the message reaches the mailbox:
23:59:59 Europe/Istanbul. Türkiye has kept UTC+3 all year since 7 September 2016, so the zone
is a fixed offset here (no time-zone database is read).
"""

from __future__ import annotations

import datetime as dt

ISTANBUL = dt.timezone(dt.timedelta(hours=3), "Europe/Istanbul")
DAYS = 5


def deemed_service_time(delivered_at: dt.datetime) -> dt.datetime:
    local_day = delivered_at.astimezone(ISTANBUL).date() + dt.timedelta(days=DAYS)
    return dt.datetime.combine(local_day, dt.time(23, 59, 59), ISTANBUL).astimezone(dt.UTC)
