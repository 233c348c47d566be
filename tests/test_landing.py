"""The landing page's daily chart: a date axis, a value scale and the forecast for the days left,
drawn from a real poll of the simulator, as SVG without JavaScript."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter import landing
from tests.harness import FakeClock, running, sim_project

# Cycle Nov 10 - Dec 10 (reset day 10); the 23rd is the 14th day, 17 days are left after it.
NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def _chart(page: str) -> str:
    svgs: list[str] = re.findall(
        r'<svg[^>]*aria-label="daily Posts this cycle[^"]*">.*?</svg>', page
    )
    (svg,) = svgs
    return svg


def test_the_daily_chart_has_dates_a_scale_and_the_forecast(tmp_path: Path) -> None:
    with running([sim_project("1001", "token-landing-aaaaaaaaaaaa")], tmp_path) as h:
        h.start().poll()
        page = landing.render(h.store.states, NOW, "/metrics", overdue=frozenset())
        usage = h.store.states["p0"].usage
    assert usage is not None
    chart = _chart(page)
    assert "<script" not in page
    for label in (">Nov 10<", ">today Nov 23<", ">Dec 10 reset<"):
        assert label in chart, label
    units = {"": 1, "k": 1e3, "M": 1e6}
    scale = [
        float(number) * units[unit]
        for number, unit in re.findall(r'text-anchor="end">([\d.]+)([kM]?)</text>', chart)
    ]
    assert scale[0] == 0 and scale[2] == 2 * scale[1]
    cycle_peak = max(n for d, n in usage.daily.items() if d >= usage.cycle.start.date())
    assert cycle_peak <= scale[2] < 2 * cycle_peak
    actual = re.findall(r"<title>(\w{3} \d\d): ([\d,]+) Posts", chart)
    assert len(actual) == 14 and actual[0][0] == "Nov 10" and actual[-1][0] == "Nov 23"
    assert int(actual[3][1].replace(",", "")) == usage.daily[datetime(2026, 11, 13).date()]
    expected = re.findall(r"<title>(\w{3} \d\d): expected ([\d,]+) Posts", chart)
    assert [day for day, _ in expected][:2] == ["Nov 24", "Nov 25"] and len(expected) == 16
    mean = (usage.forecast.projected - usage.consumed) / ((usage.cycle.end - NOW).days + 8.5 / 24)
    assert float(expected[0][1].replace(",", "")) == pytest.approx(mean, abs=1)
    assert chart.count('stroke-dasharray="3 2"') == 16 + 1  # the days left and the legend
    assert "80% band" in chart


def test_on_the_cycle_s_last_day_there_is_no_forecast_left_to_draw(tmp_path: Path) -> None:
    last_day = datetime(2026, 12, 9, 23, 0, tzinfo=UTC)
    clock = FakeClock(last_day)
    with running([sim_project("1001", "token-landing-bbbbbbbbbbbb")], tmp_path, clock) as h:
        h.start().poll()
        chart = _chart(landing.render(h.store.states, last_day, "/metrics", overdue=frozenset()))
    assert "expected" not in chart and ">today Dec 09<" in chart and ">Dec 10 reset<" in chart
