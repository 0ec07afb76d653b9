"""Job naming: schedule IDs to Cloud Scheduler job IDs and back.

A job ID "can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or underscores (_).
The maximum length is 500 characters." (google.cloud.scheduler_v1.types.Job, `name`).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from schedule_strategies import PRINTABLE_CHARS, SCHEDULE_IDS

from scheduler.naming import (
    MAX_JOB_ID_LENGTH,
    is_owned,
    is_valid_job_id,
    job_id_for,
    job_id_of,
    job_name,
    schedule_id_for,
)

PROPERTY = settings(max_examples=200, deadline=None)
PREFIX = "scion-"
CLOUD_SCHEDULER_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
# Prefixes that `Settings.validate` accepts.
PREFIXES = st.text(
    st.sampled_from("abcxyzABZ019-_"), min_size=1, max_size=100)
# IDs whose readable form cannot fit, so the digest form is used.
LONG_NON_ASCII = st.text(
    st.characters(
        min_codepoint=0x800, exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs")
    ),
    min_size=56,
    max_size=256,
)


def readable(job_id: str) -> bool:
    return not job_id[len(PREFIX):].startswith("__")


@pytest.mark.parametrize(("job_id", "valid"), [
    ("scion-daily", True), ("A_b-9", True), ("x" * 500, True), ("x" * 501, False), ("", False),
    ("scion-x\n", False), ("scion.x", False), ("scion x", False), ("é", False),
])
def test_is_valid_job_id(job_id: str, valid: bool) -> None:
    assert is_valid_job_id(job_id) is valid
    assert bool(CLOUD_SCHEDULER_JOB_ID.fullmatch(job_id)) is valid


@pytest.mark.parametrize(("schedule_id", "job_id"), [
    ("daily-report", "scion-daily-report"),
    ("Nightly-Backup-2", "scion-Nightly-Backup-2"),
    ("a_b", "scion-a_5fb"),
    ("team/report 1", "scion-team_2freport_201"),
    ("é", "scion-_c3_a9"),
    ("-", "scion--"),
])
def test_safe_ids_stay_readable_and_others_are_escaped(schedule_id: str, job_id: str) -> None:
    assert job_id_for(schedule_id, PREFIX) == job_id
    assert schedule_id_for(job_id, PREFIX) == schedule_id


def test_empty_id_is_refused() -> None:
    with pytest.raises(ValueError):
        job_id_for("", PREFIX)


@PROPERTY
@given(SCHEDULE_IDS, PREFIXES)
def test_every_id_maps_to_a_valid_owned_job_id(schedule_id: str, prefix: str) -> None:
    job_id = job_id_for(schedule_id, prefix)
    assert CLOUD_SCHEDULER_JOB_ID.fullmatch(job_id)
    assert is_valid_job_id(job_id)
    assert len(job_id) <= MAX_JOB_ID_LENGTH
    assert job_id.startswith(prefix) and is_owned(job_id, prefix)
    assert job_id_for(schedule_id, prefix) == job_id  # deterministic


@PROPERTY
@given(SCHEDULE_IDS | LONG_NON_ASCII)
def test_the_mapping_reverses_for_the_readable_form_and_not_for_the_digest(
    schedule_id: str,
) -> None:
    job_id = job_id_for(schedule_id, PREFIX)
    if readable(job_id):
        assert schedule_id_for(job_id, PREFIX) == schedule_id
    else:
        assert schedule_id_for(job_id, PREFIX) is None


@PROPERTY
@given(LONG_NON_ASCII)
def test_long_non_ascii_ids_take_the_digest_form(schedule_id: str) -> None:
    job_id = job_id_for(schedule_id, PREFIX)
    assert not readable(job_id)
    assert is_valid_job_id(job_id) and is_owned(job_id, PREFIX)
    assert schedule_id_for(job_id, PREFIX) is None


@PROPERTY
@given(st.lists(SCHEDULE_IDS | LONG_NON_ASCII, min_size=2, max_size=2, unique=True))
def test_distinct_ids_never_collide(pair: list[str]) -> None:
    a, b = pair
    assert job_id_for(a, PREFIX) != job_id_for(b, PREFIX)


@PROPERTY
@given(st.text(PRINTABLE_CHARS, min_size=1, max_size=8), st.integers(0, 3))
def test_near_collisions_of_the_escape_form_stay_distinct(seed: str, variant: int) -> None:
    # IDs built to look like each other's encodings: `_41` versus `A`, `_` versus `_5f`.
    encoded = job_id_for(seed, "")
    other = [encoded, "_" + encoded, encoded.replace("_", "__"), seed + "_"][variant]
    assume(other != seed)
    assert job_id_for(seed, PREFIX) != job_id_for(other, PREFIX)


def test_injective_over_a_batch_of_tricky_ids() -> None:
    ids = ["a", "A", "_41", "_", "__", "_5f", "a_", "a__", "-", "--", " ", "é", "e\u0301",
           "x" * 256, "x" * 255 + "é", "é" * 55, "é" * 56, "€" * 256, "€" * 255 + "x"]
    job_ids = [job_id_for(i, PREFIX) for i in ids]
    assert len(set(job_ids)) == len(ids)
    assert all(is_valid_job_id(j) for j in job_ids)


def test_readable_form_is_kept_up_to_exactly_500_characters() -> None:
    # A readable form of exactly 500 - len(prefix) characters fits; one more needs the digest.
    fits = "é" * ((MAX_JOB_ID_LENGTH - len(PREFIX)) // 6) + "a" * (
        (MAX_JOB_ID_LENGTH - len(PREFIX)) % 6
    )
    assert len(job_id_for(fits, PREFIX)) == MAX_JOB_ID_LENGTH
    assert schedule_id_for(job_id_for(fits, PREFIX), PREFIX) == fits
    too_long = fits + "a"
    assert not readable(job_id_for(too_long, PREFIX))
    assert job_id_for("x" * 256, PREFIX) == PREFIX + "x" * 256


@pytest.mark.parametrize("job_id", [
    "other-daily-report", "scion", "scion-", "Scion-daily", "scion_daily", "xscion-daily", "",
])
def test_jobs_without_the_prefix_are_never_owned(job_id: str) -> None:
    assert not is_owned(job_id, PREFIX)
    assert schedule_id_for(job_id, PREFIX) is None


@pytest.mark.parametrize("job_id", [
    "scion-_41",      # `A` escaped: not the canonical form
    "scion-_4",       # truncated escape
    "scion-_zz",      # not hex
    "scion-_4A",      # uppercase hex is not produced
    "scion-_ff",      # not UTF-8
    "scion-_c3",      # truncated UTF-8
    "scion-_2d",      # `-` escaped: not canonical
])
def test_foreign_jobs_under_the_prefix_do_not_reverse(job_id: str) -> None:
    assert is_owned(job_id, PREFIX)
    assert schedule_id_for(job_id, PREFIX) is None


@PROPERTY
@given(st.text(st.sampled_from("abAB09-_"), min_size=1, max_size=60))
def test_each_job_id_maps_back_to_at_most_one_schedule(suffix: str) -> None:
    job_id = PREFIX + suffix
    schedule_id = schedule_id_for(job_id, PREFIX)
    if schedule_id is not None:
        assert job_id_for(schedule_id, PREFIX) == job_id


def test_prefixes_do_not_leak_into_each_other() -> None:
    job_id = job_id_for("report", "team-a-")
    assert is_owned(job_id, "team-a-")
    assert not is_owned(job_id, "team-b-")
    assert schedule_id_for(job_id, "team-b-") is None


def test_resource_names() -> None:
    location = "projects/p/locations/europe-west1"
    name = job_name(location, "scion-daily")
    assert name == "projects/p/locations/europe-west1/jobs/scion-daily"
    assert job_id_of(name) == "scion-daily"
