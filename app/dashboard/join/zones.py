"""The POP nearest to a phone, from the time zone its browser reports.

A browser tells its IANA time zone (`Intl.DateTimeFormat().resolvedOptions().timeZone`) and
its UTC offset without asking the user anything; no location permission, no IP lookup. The
zone names a city, and a city is near some POP. Rules, in order:

1. A zone in `ZONES` (the zones of most of the world's people, and every zone whose city
   has a POP): that city's coordinates.
2. Otherwise the zone's area (`Europe/…`, `America/…`, …) gives a latitude (for `America/`,
   from the offset: UTC-5 and west is North America, UTC-3 and east South America) and the
   UTC offset a longitude (15° an hour); without an offset, the area's own point.
3. Otherwise (no zone, `UTC`, `Etc/GMT+3`, nonsense): the offset alone, at a mid-northern
   latitude (most people and most POPs are there); without one either: no guess (None).

The answer is the POPs ordered by great-circle distance from that point, nearest first: the
page preselects the first and offers the next few to change it. Pure: no I/O.
"""

from __future__ import annotations

import math
import re

from replication.geo import EARTH_RADIUS_KM, Placement

# zone -> (lat, lon) of its city
ZONES: dict[str, tuple[float, float]] = {
    # Europe
    "Europe/London": (51.51, -0.13), "Europe/Dublin": (53.35, -6.26), "Europe/Lisbon": (38.72, -9.14),
    "Europe/Madrid": (40.42, -3.70), "Europe/Paris": (48.86, 2.35), "Europe/Brussels": (50.85, 4.35),
    "Europe/Amsterdam": (52.37, 4.90), "Europe/Berlin": (52.52, 13.40), "Europe/Zurich": (47.38, 8.54),
    "Europe/Rome": (41.90, 12.50), "Europe/Vienna": (48.21, 16.37), "Europe/Prague": (50.08, 14.44),
    "Europe/Warsaw": (52.23, 21.01), "Europe/Copenhagen": (55.68, 12.57), "Europe/Oslo": (59.91, 10.75),
    "Europe/Stockholm": (59.33, 18.07), "Europe/Helsinki": (60.17, 24.94), "Europe/Athens": (37.98, 23.73),
    "Europe/Bucharest": (44.43, 26.10), "Europe/Kyiv": (50.45, 30.52), "Europe/Kiev": (50.45, 30.52),
    "Europe/Istanbul": (41.01, 28.98), "Europe/Moscow": (55.76, 37.62), "Atlantic/Reykjavik": (64.15, -21.94),
    # Americas
    "America/New_York": (40.71, -74.01), "America/Toronto": (43.65, -79.38), "America/Chicago": (41.88, -87.63),
    "America/Denver": (39.74, -104.99), "America/Phoenix": (33.45, -112.07),
    "America/Los_Angeles": (34.05, -118.24), "America/Vancouver": (49.28, -123.12),
    "America/Anchorage": (61.22, -149.90), "Pacific/Honolulu": (21.31, -157.86),
    "America/Mexico_City": (19.43, -99.13), "America/Bogota": (4.71, -74.07), "America/Lima": (-12.05, -77.04),
    "America/Santiago": (-33.45, -70.67), "America/Sao_Paulo": (-23.55, -46.63),
    "America/Argentina/Buenos_Aires": (-34.60, -58.38), "America/Buenos_Aires": (-34.60, -58.38),
    "America/Caracas": (10.48, -66.90), "America/Halifax": (44.65, -63.57),
    # Africa and the Middle East
    "Africa/Johannesburg": (-26.20, 28.05), "Africa/Lagos": (6.52, 3.38), "Africa/Nairobi": (-1.29, 36.82),
    "Africa/Cairo": (30.04, 31.24), "Africa/Casablanca": (33.57, -7.59), "Asia/Dubai": (25.20, 55.27),
    "Asia/Riyadh": (24.71, 46.68), "Asia/Jerusalem": (31.77, 35.21), "Asia/Tehran": (35.69, 51.39),
    # Asia and Oceania
    "Asia/Karachi": (24.86, 67.00), "Asia/Kolkata": (22.57, 88.36), "Asia/Calcutta": (22.57, 88.36),
    "Asia/Dhaka": (23.81, 90.41), "Asia/Bangkok": (13.76, 100.50), "Asia/Jakarta": (-6.21, 106.85),
    "Asia/Singapore": (1.35, 103.82), "Asia/Kuala_Lumpur": (3.14, 101.69), "Asia/Manila": (14.60, 120.98),
    "Asia/Ho_Chi_Minh": (10.82, 106.63), "Asia/Hong_Kong": (22.32, 114.17), "Asia/Shanghai": (31.23, 121.47),
    "Asia/Taipei": (25.03, 121.57), "Asia/Seoul": (37.57, 126.98), "Asia/Tokyo": (35.68, 139.69),
    "Australia/Perth": (-31.95, 115.86), "Australia/Adelaide": (-34.93, 138.60),
    "Australia/Brisbane": (-27.47, 153.03), "Australia/Sydney": (-33.87, 151.21),
    "Australia/Melbourne": (-37.81, 144.96), "Pacific/Auckland": (-36.85, 174.76),
}

# area -> (lat, lon) of a point in the middle of where its people live (for zones not listed)
AREAS: dict[str, tuple[float, float]] = {
    "Europe": (50.0, 10.0), "America": (15.0, -80.0), "Africa": (5.0, 20.0), "Asia": (30.0, 90.0),
    "Australia": (-30.0, 140.0), "Pacific": (-10.0, 170.0), "Atlantic": (30.0, -30.0), "Indian": (-10.0, 70.0),
    "Antarctica": (-70.0, 0.0), "Arctic": (75.0, 15.0),
}
DEFAULT_LAT = 30.0  # an offset without an area: mid-northern, where most people and most POPs are
MAX_ZONE_CHARS = 64  # IANA names are at most ~30 characters
_ZONE = re.compile(r"^[A-Za-z0-9_+\-/]+$")
MAX_OFFSET_MIN = 14 * 60  # UTC+14 (Kiribati) and UTC-12 are the extremes


def zone_point(tz: str | None, offset_min: int | None = None) -> tuple[float, float] | None:
    """Where a browser reporting `tz` (IANA name) and `offset_min` (minutes east of UTC) is
    probably: (lat, lon), or None for no guess. Bad input is no guess, never an error."""
    if offset_min is not None and not -MAX_OFFSET_MIN <= offset_min <= MAX_OFFSET_MIN:
        offset_min = None
    if tz and len(tz) <= MAX_ZONE_CHARS and _ZONE.match(tz):
        if tz in ZONES:
            return ZONES[tz]
        name = tz.split("/", 1)[0]
        area = AREAS.get(name)
        if area is not None:
            if offset_min is None:
                return area
            lat = area[0]
            if name == "America":  # one area from Alaska to Patagonia: the offset tells north from south
                lat = 35.0 if offset_min <= -300 else 5.0 if offset_min <= -240 else -15.0
            return (lat, offset_min / 4.0)
    if offset_min is not None:
        return (DEFAULT_LAT, offset_min / 4.0)  # 15 degrees an hour is 1 degree every 4 minutes
    return None


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest(placements: list[Placement], tz: str | None, offset_min: int | None = None) -> list[Placement]:
    """The replicas, nearest to the phone first (in their own order when there is no guess)."""
    point = zone_point(tz, offset_min)
    if point is None:
        return list(placements)
    return sorted(placements, key=lambda p: distance_km(point, (p.pop.lat, p.pop.lon)))
