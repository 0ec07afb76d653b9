"""The HTTP control API: FastAPI routes over `SchedulerControl` and the execution ledger.

Cloud Scheduler jobs are the only store of schedules (see `scheduler.jobs_decode`): a PUT writes
the job, a GET reads it back, and a `:sync` reconciles the whole set, so there is no second copy
to drift. Every write is validated whole before the first Cloud Scheduler call, so a refused
request changes nothing; a change that takes two writes and fails midway is undone
(`SchedulerControl.upsert`).

Writes to one schedule run one at a time in this process (`KeyedLocks`), so an `If-Match`
checked before a write still holds when the write happens; across processes it does not, as
Cloud Scheduler has no conditional write.

Routes follow Google's AIP style (`/v1/schedules/{id}:pause`). A schedule ID may hold any
printable character: clients percent-encode it as one path segment (`/` as `%2F`), and the app
routes on the raw path (`RawPathMiddleware`) and decodes the captured ID itself.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from scheduler.cli_base import package_version
from scion_scheduler.api import groves, schedules
from scion_scheduler.api.common import ApiContext, Caller, Context, responses
from scion_scheduler.api.errors import install_error_handlers
from scion_scheduler.api.hub_schemas import SCHEMA_MODELS as HUB_MODELS
from scion_scheduler.api.middleware import BodyLimitMiddleware, MetricsMiddleware, RawPathMiddleware
from scion_scheduler.api.schemas import HealthOut, ScheduleDocument, SyncRequest

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ApiContext", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# The bodies routes read as raw JSON (`read_json`), documented as components of their own.
DOCUMENTED_BODIES: tuple[type[BaseModel], ...] = (ScheduleDocument, SyncRequest, *HUB_MODELS)

operations = APIRouter(tags=["operations"])


@operations.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """Liveness; needs no credentials."""
    return HealthOut()


@operations.get("/metrics", responses=responses(), response_model=None)
def metrics(context: Context, _: Caller) -> Response:
    """Prometheus metrics: request counts and latency by route and status."""
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(context: ApiContext, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The ASGI app. Routes run blocking Cloud Scheduler and Firestore calls in the threadpool."""
    app = FastAPI(
        title="scion-scheduler control API", version=package_version(),
        description="Create, change, pause, run and delete Scion schedules (one Cloud Scheduler "
                    "job each) and read their execution history; or hand a hub grove's "
                    "schedules and events over as the hub stores them (`/v1/groves`).",
        docs_url=None, redoc_url=None,
    )
    app.state.context = context
    context.egress  # noqa: B018  # parsed now: a bad setting stops the app from starting
    install_error_handlers(app)
    for router in (operations, schedules.router, schedules.history, groves.router):
        app.include_router(router)
    # FastAPI's documented way to extend the document.
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Last added runs first: raw-path routing, then metrics (which reads the matched route),
    # then the body limit.
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=context.metrics)
    app.add_middleware(RawPathMiddleware)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, built once: the routes, plus the raw-JSON bodies' models."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version,
                               description=app.description, routes=app.routes)
        _, extra = models_json_schema(
            [(model, "validation") for model in DOCUMENTED_BODIES],
            ref_template="#/components/schemas/{model}")
        document.setdefault("components", {}).setdefault("schemas", {}).update(
            extra.get("$defs", {}))
        # The exposition format is text; FastAPI would document the default JSON.
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"] = {
            CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}
        app.openapi_schema = document
    return app.openapi_schema
