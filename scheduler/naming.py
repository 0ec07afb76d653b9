"""Job naming: schedule IDs to Cloud Scheduler job IDs and back.

A job ID may hold letters, digits, `-` and `_`, at most 500 characters. The mapping is
`{prefix}{encoded id}`:

* letters, digits and `-` pass through, so an ID such as `daily-report` stays readable;
* every other character, `_` included, becomes `_` plus two lowercase hex digits per UTF-8 byte,
  so the readable form is injective and reverses exactly;
* an ID whose readable form would not fit in 500 characters (up to 256 characters of any
  printable text can need 3,072) becomes `__` plus a SHA-256 digest. The readable form never
  contains `__` (after `_` always come two hex digits), so the two forms cannot collide. A
  digest does not reverse: such a job is matched to its schedule through the `schedule-id`
  attribute that every job's fire message carries (see `scheduler.contract`).

Jobs whose ID does not start with the prefix are not ours and are never touched.
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_JOB_ID_LENGTH = 500
_SAFE = re.compile(r"[A-Za-z0-9-]")
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
_HASHED_MARK = "__"


def is_valid_job_id(job_id: str) -> bool:
    """Whether Cloud Scheduler accepts `job_id`."""
    # fullmatch: with `match`, `$` also matches before a trailing line break.
    return bool(_JOB_ID_RE.fullmatch(job_id))


def _readable(schedule_id: str) -> str:
    out: list[str] = []
    for char in schedule_id:
        if _SAFE.match(char):
            out.append(char)
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def _hashed(schedule_id: str) -> str:
    digest = hashlib.sha256(schedule_id.encode("utf-8")).digest()
    return _HASHED_MARK + base64.b32encode(digest).decode().rstrip("=").lower()


def job_id_for(schedule_id: str, prefix: str) -> str:
    """The job ID for a schedule; distinct schedule IDs always give distinct job IDs."""
    if not schedule_id:
        raise ValueError("schedule ID must not be empty")
    readable = _readable(schedule_id)
    if len(prefix) + len(readable) <= MAX_JOB_ID_LENGTH:
        return prefix + readable
    return prefix + _hashed(schedule_id)


def is_owned(job_id: str, prefix: str) -> bool:
    """Whether a job ID belongs to this deployment (carries its prefix)."""
    return job_id.startswith(prefix) and len(job_id) > len(prefix)


def schedule_id_for(job_id: str, prefix: str) -> str | None:
    """Reverse `job_id_for`. None for a job that is not ours, or for a digest-named job (look at
    its `schedule-id` attribute instead)."""
    if not is_owned(job_id, prefix):
        return None
    encoded = job_id[len(prefix):]
    if encoded.startswith(_HASHED_MARK):
        return None
    raw = bytearray()
    i = 0
    while i < len(encoded):
        char = encoded[i]
        if char == "_":
            hex_pair = encoded[i + 1:i + 3]
            if len(hex_pair) != 2 or not re.fullmatch(r"[0-9a-f]{2}", hex_pair):
                return None
            raw.append(int(hex_pair, 16))
            i += 3
        else:
            raw.extend(char.encode())
            i += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Only the canonical encoding reverses, so that each job ID maps to at most one schedule.
    return decoded if _readable(decoded) == encoded else None


def job_name(location_path: str, job_id: str) -> str:
    """The full resource name `projects/P/locations/L/jobs/ID`."""
    return f"{location_path}/jobs/{job_id}"


def job_id_of(name: str) -> str:
    """The job ID at the end of a full job resource name."""
    return name.rsplit("/", 1)[-1]
