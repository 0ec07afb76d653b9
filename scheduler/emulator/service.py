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

from scheduler.emulator.store import ApiError, Execution, JobStore, check_parent
from scheduler.logs import get_logger

SERVICE = "google.cloud.scheduler.v1.CloudScheduler"
LOCATIONS_SERVICE = "google.cloud.location.Locations"
METHODS = ("ListJobs", "GetJob", "CreateJob", "UpdateJob", "DeleteJob",
           "PauseJob", "ResumeJob", "RunJob", "ListLocations", "GetLocation")
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
        raise ValueError(f"fault codes: {', '.join(unknown)} not supported (use {', '.join(FAULT_CODES)})")
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

    def generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        """Both services as generic handlers for `grpc.Server.add_generic_rpc_handlers`."""
        s = scheduler_v1
        scheduler: dict[str, grpc.RpcMethodHandler] = {
            "ListJobs": self._handler("ListJobs", s.ListJobsRequest, self._list_jobs),
            "GetJob": self._handler("GetJob", s.GetJobRequest, lambda r: self.store.get(r.name)),
            "CreateJob": self._handler("CreateJob", s.CreateJobRequest,
                                       lambda r: self.store.create(r.parent, r.job)),
            "UpdateJob": self._handler("UpdateJob", s.UpdateJobRequest,
                                       lambda r: self.store.update(r.job, r.update_mask.paths)),
            "DeleteJob": self._handler("DeleteJob", s.DeleteJobRequest, self._delete_job),
            "PauseJob": self._handler("PauseJob", s.PauseJobRequest, lambda r: self.store.pause(r.name)),
            "ResumeJob": self._handler("ResumeJob", s.ResumeJobRequest, lambda r: self.store.resume(r.name)),
            "RunJob": self._handler("RunJob", s.RunJobRequest, self._run_job),
        }
        locations: dict[str, grpc.RpcMethodHandler] = {
            "ListLocations": self._raw_handler("ListLocations", locations_pb2.ListLocationsRequest,
                                               self._list_locations),
            "GetLocation": self._raw_handler("GetLocation", locations_pb2.GetLocationRequest,
                                             self._get_location),
        }
        return [
            grpc.method_handlers_generic_handler(SERVICE, scheduler),
            grpc.method_handlers_generic_handler(LOCATIONS_SERVICE, locations),
        ]

    def _handler(self, method: str, request_type: Any, fn: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
        return self._raw_handler(method, request_type.pb(), fn)

    def _raw_handler(self, method: str, request_pb: Any, fn: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            log.debug("api call", method=method, request=_summary(request))
            code = self._fault(method)
            if code is not None:
                log.debug("api call failed by fault injection", method=method, code=code.name)
                context.abort(code, f"injected fault: {code.name}")
            try:
                return fn(request)
            except ApiError as exc:
                log.debug("api call refused", method=method, code=exc.code.name, reason=exc.message)
                context.abort(exc.code, exc.message)
            except Exception as exc:  # a bug of ours must answer INTERNAL, not hang the client
                log.exception("api call crashed", method=method)
                context.abort(grpc.StatusCode.INTERNAL, f"emulator error: {exc}")

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
        response = locations_pb2.ListLocationsResponse()
        for location in sorted(self.store.locations):
            response.locations.add(name=f"{request.name}/locations/{location}", location_id=location,
                                   display_name=location)
        return response

    def _get_location(self, request: Any) -> Any:
        _, location = self.store.check_location(request.name, "name")
        return locations_pb2.Location(name=request.name, location_id=location, display_name=location)


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
