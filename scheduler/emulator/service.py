"""The gRPC face of the emulator: `google.cloud.scheduler.v1.CloudScheduler` (and the two
`google.cloud.location.Locations` methods the client also exposes), with call counting and
fault injection.

No server stubs ship with google-cloud-scheduler, so the service is a generic handler whose
(de)serializers are the protobuf classes behind the proto-plus request and response types.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import scheduler_v1
from google.cloud.location import locations_pb2
from google.protobuf import empty_pb2

from scheduler.emulator.store import Execution, JobStore
from scheduler.emulator.validation import ApiError, check_parent
from scheduler.logs import get_logger

SERVICE = "google.cloud.scheduler.v1.CloudScheduler"
LOCATIONS_SERVICE = "google.cloud.location.Locations"
LOCATION_METHODS = ("ListLocations", "GetLocation")
METHODS = ("ListJobs", "GetJob", "CreateJob", "UpdateJob", "DeleteJob",
           "PauseJob", "ResumeJob", "RunJob", *LOCATION_METHODS)
DEFAULT_LOCATION = "us-central1"
# The transient codes a client is expected to retry (google.api_core and scheduler.sync do).
FAULT_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")

log = get_logger(__name__)


@dataclass(frozen=True)
class FaultPlan:
    """Fail `rate` of the calls to `methods` (all when None) with one of `codes`."""

    rate: float
    codes: tuple[grpc.StatusCode, ...]
    methods: frozenset[str] | None


def fault_plan(rate: float, codes: Iterable[str], methods: Iterable[str] | None) -> FaultPlan:
    """Validate fault settings; raises ValueError naming the bad one."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate: must be from 0 to 1, got {rate}")
    names = tuple(codes)
    if not names:
        raise ValueError("fault codes: at least one is required")
    unknown = [c for c in names if c not in FAULT_CODES]
    if unknown:
        raise ValueError(
            f"fault codes: {', '.join(unknown)} not supported (use {', '.join(FAULT_CODES)})"
        )
    chosen = None if methods is None else frozenset(methods)
    if chosen is not None and chosen - set(METHODS):
        raise ValueError(f"fault methods: unknown {', '.join(sorted(chosen - set(METHODS)))}")
    return FaultPlan(rate, tuple(grpc.StatusCode[c] for c in names), chosen)


class CloudSchedulerService:
    """The RPC handlers over a `JobStore`. `dispatch` starts delivering a RunJob execution."""

    def __init__(self, store: JobStore, dispatch: Callable[[Execution], None]) -> None:
        self.store = store
        self.dispatch = dispatch
        self.call_counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._plan: FaultPlan | None = None
        self._random = random.Random()
        # Every method by RPC name: (request protobuf class, handler from request to response).
        # Both faces (gRPC here, REST in `scheduler.emulator.rest`) go through `call`.
        self.methods = self._methods()

    def set_faults(self, plan: FaultPlan | None, seed: int | None = None) -> None:
        """Start (or, with None, stop) failing calls."""
        with self._lock:
            self._plan = plan
            self._random = random.Random(seed)

    def _fault(self, method: str) -> grpc.StatusCode | None:
        with self._lock:
            self.call_counts[method] += 1
            plan = self._plan
            if plan is None or (plan.methods is not None and method not in plan.methods):
                return None
            if self._random.random() >= plan.rate:
                return None
            return self._random.choice(plan.codes)

    def _methods(self) -> dict[str, tuple[Any, Callable[[Any], Any]]]:
        s = scheduler_v1
        return {
            "ListJobs": (s.ListJobsRequest.pb(), self._list_jobs),
            "GetJob": (s.GetJobRequest.pb(), lambda r: self.store.get(r.name)),
            "CreateJob": (s.CreateJobRequest.pb(), lambda r: self.store.create(r.parent, r.job)),
            "UpdateJob": (s.UpdateJobRequest.pb(),
                          lambda r: self.store.update(r.job, r.update_mask.paths)),
            "DeleteJob": (s.DeleteJobRequest.pb(), self._delete_job),
            "PauseJob": (s.PauseJobRequest.pb(), lambda r: self.store.pause(r.name)),
            "ResumeJob": (s.ResumeJobRequest.pb(), lambda r: self.store.resume(r.name)),
            "RunJob": (s.RunJobRequest.pb(), self._run_job),
            "ListLocations": (locations_pb2.ListLocationsRequest, self._list_locations),
            "GetLocation": (locations_pb2.GetLocationRequest, self._get_location),
        }

    def call(self, method: str, request: Any) -> Any:
        """Run one call as either face receives it: counted, maybe failed by fault injection,
        logged. Raises `ApiError` with the code and message both faces answer."""
        log.debug("api call", method=method, request=_summary(request))
        code = self._fault(method)
        if code is not None:
            log.debug("api call failed by fault injection", method=method, code=code.name)
            raise ApiError(code, f"injected fault: {code.name}")
        try:
            return self.methods[method][1](request)
        except ApiError as exc:
            log.debug("api call refused", method=method, code=exc.code.name, reason=exc.message)
            raise
        except Exception as exc:  # a bug of ours must answer INTERNAL, not hang the client
            log.exception("api call crashed", method=method)
            raise ApiError(grpc.StatusCode.INTERNAL, f"emulator error: {exc}") from exc

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Both services as generic handlers for `grpc.Server.add_generic_rpc_handlers`."""
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {
            SERVICE: {}, LOCATIONS_SERVICE: {}}
        for method, (request_pb, _) in self.methods.items():
            service = LOCATIONS_SERVICE if method in LOCATION_METHODS else SERVICE
            by_service[service][method] = self._grpc_handler(method, request_pb)
        return [grpc.method_handlers_generic_handler(name, methods)
                for name, methods in by_service.items()]

    def _grpc_handler(self, method: str, request_pb: Any) -> grpc.RpcMethodHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return self.call(method, request)
            except ApiError as exc:
                context.abort(exc.code, exc.message)

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_pb.FromString, response_serializer=_serialize
        )

    def _list_jobs(self, request: Any) -> Any:
        jobs, token = self.store.list_page(request.parent, request.page_size, request.page_token)
        response = scheduler_v1.ListJobsResponse.pb()(next_page_token=token)
        response.jobs.extend(jobs)
        return response

    def _delete_job(self, request: Any) -> Any:
        self.store.delete(request.name)
        return empty_pb2.Empty()

    def _run_job(self, request: Any) -> Any:
        job, execution = self.store.claim_now(request.name)
        self.dispatch(execution)
        return job

    def _list_locations(self, request: Any) -> Any:
        # Only the `projects/P` form is checked: "any" stands in for the location.
        check_parent(f"{request.name}/locations/any", "name")
        listed = self.listed_locations()
        start = 0
        if request.page_token:
            if not request.page_token.isdigit() or int(request.page_token) >= len(listed):
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"page_token: "
                               f"{request.page_token!r} is not a token this service returned")
            start = int(request.page_token)
        end = len(listed) if request.page_size <= 0 else start + request.page_size
        response = locations_pb2.ListLocationsResponse(
            next_page_token=str(end) if end < len(listed) else "")
        for location in listed[start:end]:
            response.locations.append(_location(f"{request.name}/locations/{location}", location))
        return response

    def listed_locations(self) -> list[str]:
        """The locations in ListLocations' order: the default location first (where the service
        puts the project's App Engine app's, which gcloud takes as its default), then the rest
        sorted."""
        default = self.default_location()
        return [default, *sorted(self.store.locations - {default})]

    def default_location(self) -> str:
        """The location gcloud picks when given no --location (us-central1 when offered)."""
        locations = self.store.locations
        return DEFAULT_LOCATION if DEFAULT_LOCATION in locations else min(locations)

    def _get_location(self, request: Any) -> Any:
        _, location = self.store.check_location(request.name, "name")
        return _location(request.name, location)


def _location(name: str, location: str) -> Any:
    # The service labels each location with its region; gcloud reads that label (its only
    # one) to pick a default location (googlecloudsdk/command_lib/scheduler/util.py, SDK 528).
    return locations_pb2.Location(name=name, location_id=location, display_name=location,
                                  labels={"cloud.googleapis.com/region": location})


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _summary(request: Any) -> str:
    for attr in ("name", "parent"):
        value = getattr(request, attr, "")
        if value:
            return str(value)
    job = getattr(request, "job", None)
    return str(job.name) if job is not None else ""
