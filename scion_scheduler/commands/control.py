"""Control commands: `sync`, `plan`, `list`, `describe`, `pause`, `resume`, `delete`, `run`.

Every command checks the required settings (project, location, topic) before anything else, and
`sync`/`plan` validate the whole schedule file before the first API call, so bad input (exit 2)
never applies anything. One exception: the hub's JSON is taken item by item unless `--strict`,
because a real grove can hold items the hub never validated; each invalid item is refused on
its own, listed with its ID, field and reason, and its job left exactly as it is (never edited,
never pruned), while every valid item is synced, and the command exits 1. Exit 1 also means some
step or lookup failed; `--output json` prints the plan, each step's outcome, the refused items,
or the job, as machine-readable JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from google.api_core import exceptions as gexc

from scheduler.cli_base import EXIT_FAILED, EXIT_OK, emit, fail
from scheduler.config import Settings
from scheduler.contract import ContractError
from scheduler.control import JobNotFound, SchedulerControl, with_registry
from scheduler.job_readback import JobInfo
from scheduler.jobs import JobSpec
from scheduler.model import format_instant
from scheduler.sync import ApplyResult
from scheduler.sync_plan import Plan, Step
from scheduler.validation import ScheduleSet, load_schedule_set
from scion_scheduler.commands.schedules import add_format_flag

REQUIRED = ("project", "location", "topic")


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people, json for scripts (default text)")


def register(sub: Any) -> None:
    """Add the control commands."""
    for name, handler, text, prune_help in (
        ("sync", sync, "make Cloud Scheduler match a schedule file (apply only the difference)",
         "also delete jobs under the prefix whose schedule is not in the file"),
        ("plan", plan, "show what sync would change (no writes)",
         "plan deletes of jobs without a schedule"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--file", required=True, help="YAML or JSON schedule file")
        p.add_argument("--prune", action="store_true", help=prune_help)
        p.add_argument("--verify", action="store_true",
                       help="tick mode: read every schedule document instead of trusting the "
                            "sync manifest (repairs documents edited or deleted by hand)")
        if handler is sync:
            p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        add_format_flag(p)
        add_strict_flag(p)
        _output(p)
        p.set_defaults(handler=handler)

    p = sub.add_parser("list", help="list the jobs under the prefix")
    _output(p)
    p.set_defaults(handler=list_jobs)

    p = sub.add_parser("describe", help="show a schedule's job and its next fire times")
    p.add_argument("id", metavar="ID", help="schedule ID")
    p.add_argument("-n", type=int, default=5, help="how many next fire times (default 5)")
    _output(p)
    p.set_defaults(handler=describe)

    for name, handler, text in (
        ("pause", pause, "pause a schedule's job"),
        ("resume", resume, "resume a schedule's job"),
        ("delete", delete, "delete a schedule's job (a missing job is success)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", metavar="ID", help="schedule ID")
        _output(p)
        p.set_defaults(handler=handler)

    p = sub.add_parser("run", help="fire a schedule once now (publishes a manual fire message)")
    p.add_argument("id", metavar="ID", help="schedule ID")
    _output(p)
    p.set_defaults(handler=run)


def _control(settings: Settings) -> SchedulerControl:
    return with_registry(settings)


def guarded(args: argparse.Namespace, action: Callable[[], int]) -> int:
    """Turn a failed lookup or API call into exit 1 with the reason (JSON too with
    --output json)."""
    try:
        return action()
    except (JobNotFound, ContractError, gexc.GoogleAPIError) as exc:
        message = str(exc.args[0]) if isinstance(exc, JobNotFound) and exc.args else str(exc)
        if args.output == "json":
            emit({"ok": False, "error": message}, "json", "")
        return fail(message, EXIT_FAILED)


def _delete_absent(plan: Plan, absent: Sequence[str], spec: JobSpec) -> Plan:
    """Without --prune, still delete the jobs of what the hub's document marks gone (deleted
    schedules, events no longer pending): the document says they must not exist. With --prune
    they are deleted anyway, as jobs without a schedule."""
    gone = {spec.job_id(schedule_id): schedule_id for schedule_id in absent}
    doomed = [job_id for job_id in plan.kept if job_id in gone]
    if plan.prune or not doomed:
        return plan
    deletes = tuple(Step("delete", job_id, gone[job_id], "gone at the hub") for job_id in doomed)
    return replace(plan, steps=tuple(sorted(plan.steps + deletes, key=lambda s: s.job_id)),
                   kept=tuple(job_id for job_id in plan.kept if job_id not in gone))


def add_strict_flag(parser: argparse.ArgumentParser) -> None:
    """`--strict`: the hub's JSON all or nothing, as a native schedule file always is."""
    parser.add_argument(
        "--strict", action="store_true",
        help="refuse the hub's whole document when any item is invalid (exit 2); by default each "
             "invalid item is refused on its own and its job left as it is, the rest is synced, "
             "and the exit code is 1. A native schedule file is always all or nothing")


def _refusals(loaded: ScheduleSet) -> tuple[list[dict[str, str]], str]:
    """The refused items as JSON and as text (empty when none)."""
    if not loaded.refused:
        return [], ""
    lines = [f"refused {e.schedule_id}: {e.field}: {e.reason}" for e in loaded.refused]
    lines.append(f"{len(loaded.keep) or len(loaded.refused)} hub item(s) refused; the job of each "
                 "was left exactly as it is")
    return [{"id": e.schedule_id, "field": e.field, "reason": e.reason}
            for e in loaded.refused], "\n".join(lines)


def _plan_for(control: SchedulerControl, loaded: ScheduleSet, prune: bool,
              verify: bool = False) -> Plan:
    return _delete_absent(control.plan(loaded.schedules, prune=prune, keep=loaded.keep,
                                       verify=verify),
                          loaded.absent, control.spec)


# What a planning command does with the plan: (control, plan, refused items as JSON, as text).
_Report = Callable[[SchedulerControl, Plan, list[dict[str, str]], str], int]


def _planned(args: argparse.Namespace, settings: Settings, loaded: ScheduleSet,
             report: _Report) -> int:
    """Plan a validated set against Cloud Scheduler and hand the plan to `report`."""
    refused, refused_text = _refusals(loaded)

    def act() -> int:
        with _control(settings) as control:
            # `hub pull --sync` has no --verify flag.
            verify = bool(getattr(args, "verify", False))
            return report(control, _plan_for(control, loaded, args.prune, verify), refused,
                          refused_text)

    return guarded(args, act)


def _loaded(args: argparse.Namespace, settings: Settings) -> ScheduleSet:
    """The `--file` of `sync`/`plan`, validated whole (after the required settings)."""
    settings.require(*REQUIRED)
    return load_schedule_set(args.file, format=args.format, strict=args.strict,
                             egress=settings.allowed_targets)


def sync_loaded(args: argparse.Namespace, settings: Settings, loaded: ScheduleSet) -> int:
    """Plan, then (unless `args.dry_run`) apply a validated set; exit 1 when any step failed or
    any hub item was refused. Also the last step of `hub pull --sync`."""

    def report(control: SchedulerControl, the_plan: Plan, refused: list[dict[str, str]],
               refused_text: str) -> int:
        if args.dry_run:
            emit({"dry_run": True, "ok": not refused, "plan": the_plan.to_dict(),
                  "result": None, "refused": refused}, args.output,
                 "\n".join(filter(None, [the_plan.describe(), refused_text])))
            return EXIT_FAILED if refused else EXIT_OK
        result = control.apply(the_plan)
        emit({"dry_run": False, "ok": result.ok and not refused, "plan": the_plan.to_dict(),
              "result": result.to_dict(), "refused": refused}, args.output,
             "\n".join(filter(None, [the_plan.describe(), result.describe(), refused_text])))
        return EXIT_OK if result.ok and not refused else EXIT_FAILED

    return _planned(args, settings, loaded, report)


def sync(args: argparse.Namespace, settings: Settings) -> int:
    """Plan, then (unless --dry-run) apply; exit 1 when any step failed or an item was refused."""
    return sync_loaded(args, settings, _loaded(args, settings))


def plan(args: argparse.Namespace, settings: Settings) -> int:
    """Print the plan for a schedule file; exit 1 when a hub item was refused."""

    def report(_: SchedulerControl, the_plan: Plan, refused: list[dict[str, str]],
               refused_text: str) -> int:
        emit(the_plan.to_dict() | ({"refused": refused} if refused else {}), args.output,
             "\n".join(filter(None, [the_plan.describe(), refused_text])))
        return EXIT_FAILED if refused else EXIT_OK

    return _planned(args, settings, _loaded(args, settings), report)


def _info_line(info: JobInfo) -> str:
    upcoming = ", ".join(format_instant(f) for f in info.next_fires)
    owner = info.schedule_id if info.schedule_id is not None else "(unknown schedule)"
    line = f"{owner}  {info.job_id}  {info.state}  {info.schedule!r} {info.time_zone}"
    return f"{line}  next: {upcoming}" if upcoming else line


def list_jobs(args: argparse.Namespace, settings: Settings) -> int:
    """Print every job under the prefix."""
    settings.require(*REQUIRED)

    def act() -> int:
        with _control(settings) as control:
            jobs = control.list_jobs()
        emit({"jobs": [j.to_dict() for j in jobs]}, args.output,
             "\n".join([_info_line(j) for j in jobs] + [f"{len(jobs)} job(s)"]))
        return EXIT_OK

    return guarded(args, act)


def describe(args: argparse.Namespace, settings: Settings) -> int:
    """Print one schedule's job with its next fire times."""
    settings.require(*REQUIRED)

    def act() -> int:
        with _control(settings) as control:
            info = control.describe(args.id, fires=max(args.n, 0))
        data = info.to_dict()
        text = "\n".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in data.items()
        )
        emit(data, args.output, text)
        return EXIT_OK

    return guarded(args, act)


def _single(args: argparse.Namespace, settings: Settings,
            op: Callable[[SchedulerControl, str], ApplyResult]) -> int:
    settings.require(*REQUIRED)

    def act() -> int:
        with _control(settings) as control:
            result = op(control, args.id)
        emit(result.to_dict(), args.output, result.describe())
        return EXIT_OK if result.ok else EXIT_FAILED

    return guarded(args, act)


def pause(args: argparse.Namespace, settings: Settings) -> int:
    """Pause a schedule's job."""
    return _single(args, settings, lambda control, sid: control.pause(sid))


def resume(args: argparse.Namespace, settings: Settings) -> int:
    """Resume a schedule's job."""
    return _single(args, settings, lambda control, sid: control.resume(sid))


def delete(args: argparse.Namespace, settings: Settings) -> int:
    """Delete a schedule's job."""
    return _single(args, settings, lambda control, sid: control.remove(sid))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Publish one manual fire of a schedule now."""
    settings.require(*REQUIRED)

    def act() -> int:
        with _control(settings) as control:
            result = control.run_now(args.id)
        emit({"ok": True, **result.to_dict()}, args.output,
             f"fired {result.schedule_id} at {format_instant(result.fire_time)} "
             f"(execution {result.execution_id}, message {result.message_id})")
        return EXIT_OK

    return guarded(args, act)
