"""Read a Scion hub through its own REST API: a grove's listings, and the fire endpoint's probe.

`pull` fetches every page of `GET /api/v1/groves/{groveId}/schedules` and of
`.../scheduled-events?status=pending` (`pkg/hub/handlers_schedules.go:251-283`,
`handlers_scheduled_events.go:233-265`) and returns the document `sync --format scion` takes. It
refuses a listing it could not read whole, naming the hub's limit, because a prune over a partial
listing would delete the jobs of everything left out:

* the schedule store never reads `cursor` and caps `limit` at 200
  (`pkg/store/sqlite/schedule.go:154-193`): past 200 schedules, page 2 is page 1 again;
* the event store filters `id < cursor` but orders by `created_at` over random UUIDs
  (`pkg/store/sqlite/scheduled_event.go:189-248`): past 200 events, pages skip and repeat items.

So a page that comes back again, an ID seen twice, or fewer items than the hub's `totalCount`
refuses the pull. Events are listed `status=pending` only: every run of a recurring schedule
writes an event row that ends `fired` and is kept 7 days (`pkg/hub/server.go:1756-1795`), and
those rows would push any busy grove past one page; an event that is no longer pending needs no
job, and a prune removes one left from before.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

import httpx

from scion_scheduler.errors import ScionSchedulerError
from worker.actions.scion import NO_FIRE_ENDPOINT, is_route_not_found

PAGE_LIMIT = 200  # the store's cap (schedule.go:158-160, scheduled_event.go:194-196)
MAX_PAGES = 1000
TIMEOUT_S = 30.0

_LIMITS = {
    "schedules": (
        "the hub's schedule listing cannot be read past one page: its store never reads "
        "`cursor`, so every page is page 1 again, and it returns at most 200 schedules a page "
        "(pkg/store/sqlite/schedule.go:154-193)"),
    "events": (
        "the hub's scheduled-event listing cannot be read past one page: its store pages by "
        "`id < cursor` but orders by created_at, so over random UUIDs its pages skip and repeat "
        "events, and it returns at most 200 a page (pkg/store/sqlite/scheduled_event.go:189-248)"),
}


class HubError(ScionSchedulerError):
    """The hub could not be read (unreachable, refused, or an answer that is not its API)."""


class ListingRefused(HubError):
    """A listing could not be read whole; the message names the hub's limit."""


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return f"{error.get('code')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return response.text[:200].strip() or "(no body)"


class HubClient:
    """A client of one hub (`base_url`), authenticated with the bearer `token` if given."""

    def __init__(self, base_url: str, token: str | None, *,
                 client: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
        self._headers = headers

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            return self._client.get(url, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            raise HubError(f"GET {url}: {type(exc).__name__}: {exc}") from exc

    def listing(self, grove: str, collection: str, key: str,
                params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every page of one listing, as the hub sent them; `ListingRefused` when the pages
        do not add up to the whole listing."""
        path = f"/api/v1/groves/{quote(grove, safe='')}/{collection}"
        pages: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        cursor = ""
        for number in range(1, MAX_PAGES + 1):
            query = {"limit": str(PAGE_LIMIT), **(params or {})}
            if cursor:
                query["cursor"] = cursor
            response = self._get(path, query)
            if response.status_code != 200:
                raise HubError(f"GET {path}: HTTP {response.status_code}: {_error_text(response)}")
            page = _envelope(response, key, path)
            ids = [str(item.get("id")) for item in page[key] or [] if isinstance(item, dict)]
            repeated = [i for i in ids if i in seen]
            if repeated:
                earlier = seen[repeated[0]]
                again = (f"is page {earlier} again" if len(repeated) == len(ids)
                         else f"repeats items of page {earlier}")
                raise ListingRefused(
                    f"{key} of grove {grove}: page {number} {again} ({len(repeated)} ID(s) seen "
                    f"twice, e.g. {repeated[0]}); {_LIMITS[key]}")
            seen.update(dict.fromkeys(ids, number))
            pages.append(page)
            cursor = page.get("nextCursor") or ""
            if not cursor:
                break
        else:
            raise ListingRefused(f"{key} of grove {grove}: still a nextCursor after {MAX_PAGES} "
                                 "pages")
        total = max((p.get("totalCount") or 0 for p in pages), default=0)
        if len(seen) < total:
            raise ListingRefused(f"{key} of grove {grove}: the hub reported {total} but its pages "
                                 f"held {len(seen)}; {_LIMITS[key]}")
        return pages

    def pull(self, grove: str) -> dict[str, Any]:
        """Both listings of `grove`, whole, as one document for `sync --format scion`."""
        schedules = self.listing(grove, "schedules", "schedules")
        events = self.listing(grove, "scheduled-events", "events", {"status": "pending"})
        return {
            "schedules": [i for p in schedules for i in p["schedules"] or []],
            "events": [i for p in events for i in p["events"] or []],
        }

    def probe(self, grove: str, item: str) -> Probe:
        """`GET` on a schedule's fire endpoint (docs/hub-fire-endpoint.md, "Probe"): it checks
        the credentials and answers 405, loading and firing nothing. The hub authenticates before
        it routes (`handlers_schedules.go:67-72`), so a 401 or 403 says nothing about the
        endpoint; today's hub routes `fire` to its unknown-action 404 (line 135)."""
        path = f"/api/v1/groves/{quote(grove, safe='')}/schedules/{quote(item, safe='')}/fire"
        response = self._get(path)
        status = response.status_code
        if status == 405:
            return Probe(Endpoint.PRESENT, Token.ACCEPTED, status, "the fire endpoint answered")
        if status in (401, 403):
            return Probe(Endpoint.UNKNOWN, Token.REFUSED, status, _error_text(response))
        if is_route_not_found("schedule", status, response.content):
            return Probe(Endpoint.MISSING, Token.ACCEPTED, status, NO_FIRE_ENDPOINT)
        return Probe(Endpoint.UNKNOWN, Token.UNKNOWN, status, _error_text(response))


def _envelope(response: httpx.Response, key: str, path: str) -> dict[str, Any]:
    try:
        page = response.json()
    except ValueError as exc:
        raise HubError(f"GET {path}: the answer is not JSON") from exc
    if not isinstance(page, dict) or key not in page or not isinstance(page[key], list | None):
        raise HubError(f"GET {path}: not the hub's listing (expected {{\"{key}\": [...]}})")
    return page


class Endpoint(Enum):
    """Whether a hub has the fire endpoint."""

    PRESENT = "present"
    MISSING = "missing"
    UNKNOWN = "unknown"


class Token(Enum):
    """Whether the hub accepted the token."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Probe:
    """What `HubClient.probe` found, with the status and the hub's words for it."""

    endpoint: Endpoint
    token: Token
    status: int
    detail: str

    @property
    def ready(self) -> bool:
        """The hub has the endpoint and takes the token: workers can fire into it."""
        return self.endpoint is Endpoint.PRESENT and self.token is Token.ACCEPTED
