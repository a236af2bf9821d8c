"""Property-based tests: timestamp parsing against a reference, paging against generated lists."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eachlabs_loader.schema import normalize_timestamps

OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)
ZONE_FORMS = ("Z", "+hh:mm", "+hhmm", "+hh", "none")


@st.composite
def timestamp_texts(draw):
    """A datetime, written in one of the accepted forms, and the UTC instant it denotes."""
    utc = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    utc = utc.replace(tzinfo=timezone.utc)
    form = draw(st.sampled_from(ZONE_FORMS))
    minutes = draw(OFFSETS)
    if form == "Z" or form == "none":
        minutes = 0
    if form == "+hh":
        minutes -= minutes % 60 if minutes >= 0 else -((-minutes) % 60)
    local = utc.astimezone(timezone(timedelta(minutes=minutes)))
    digits = draw(st.integers(min_value=0, max_value=9))
    nanos = draw(st.integers(min_value=0, max_value=999))
    fraction = f"{local.microsecond:06d}{nanos:03d}"[:digits]
    sep = draw(st.sampled_from(["T", " ", "t"]))
    text = f"{local.year:04d}-" + local.strftime(f"%m-%d{sep}%H:%M:%S")  # %Y is unpadded < 1000
    if digits:
        text += draw(st.sampled_from([".", ","])) + fraction
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    text += {
        "Z": draw(st.sampled_from(["Z", "z"])),
        "+hh:mm": f"{sign}{hh:02d}:{mm:02d}",
        "+hhmm": f"{sign}{hh:02d}{mm:02d}",
        "+hh": f"{sign}{hh:02d}",
        "none": "",
    }[form]
    kept = int(fraction.ljust(6, "0")[:6]) if digits else 0
    expected = utc.replace(microsecond=kept if digits >= 6 else int(fraction.ljust(6, "0")))
    if digits == 0:
        expected = utc.replace(microsecond=0)
    return text, pd.Timestamp(expected)


@settings(max_examples=300, deadline=None)
@given(timestamp_texts())
def test_every_accepted_form_parses_to_the_instant_it_denotes(case):
    text, expected = case
    assert normalize_timestamps([text]).iloc[0] == expected, text


@settings(max_examples=60, deadline=None)
@given(st.lists(timestamp_texts(), min_size=1, max_size=40))
def test_a_column_mixing_forms_parses_each_value_on_its_own(cases):
    parsed = normalize_timestamps([text for text, _ in cases])
    assert list(parsed) == [expected for _, expected in cases]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=30), min_size=1, max_size=20))
def test_garbage_never_raises_and_only_becomes_nat_or_a_timestamp(texts):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = normalize_timestamps(texts)
    assert len(parsed) == len(texts)
    assert str(parsed.dtype) == "datetime64[us, UTC]"
