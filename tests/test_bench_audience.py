"""`edgestate bench audience --short`: 50 phones, each from its own loopback address, hold the
/join stream and tap through the audience rate limit for 10 s. Checked: every phone connected
and none dropped, the big screen (one dashboard on /ws) connected and not dropped, no tap refused (one address per phone: the per-address limit is not hit), the
journeys come back on the stream, and the figures are all there. Latency figures are reported,
not asserted (a busy 2-core machine)."""

from __future__ import annotations

import json

import pytest

from app.cli import main

pytestmark = pytest.mark.timeout(240)


def test_short_audience_bench(tmp_path, capsys):
    out = tmp_path / "audience.json"
    assert main(["bench", "audience", "--short", "--quiet", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert r["phones"] == 50 and r["connected"] == 50 and r["dropped"] == 0, (r, text)
    assert r["refused"] == {}, r
    assert r["taps"] > 0 and r["write_ms"]["n"] == r["taps"]
    assert r["journeys_everywhere"] > 0 and r["stream_lag_ms"]["n"] > 0
    assert r["kib_per_phone"] is not None
    # the big screen: the presenter's dashboard on the full stream, kept up with and not cut off
    assert r["screens"] == r["screens_connected"] == 1 and r["screens_dropped"] == 0, r
    assert r["screen_lag_ms"]["n"] > 0 and r["screen_events_per_s"] > 0
    assert "big screen" in text
    # the server's effective speed, read during the 10 s: 50 phones are far below what it carries
    speed = r["effective_speed"]
    assert speed["requested"] == 1.0 and speed["p50"] is not None and 0.0 < speed["min"] <= speed["p50"] <= 1.0
    assert "effective speed" in text
    print(text)


@pytest.mark.parametrize("bad, says", [("-1", "must be at least 0"), ("1.5", "not an integer"), ("x", "not an integer")])
def test_a_bad_screen_count_is_refused_before_anything_starts(bad, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "audience", "--screens", bad, "--short"])
    assert e.value.code == 2 and says in capsys.readouterr().err
