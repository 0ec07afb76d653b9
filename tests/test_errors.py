"""One exception hierarchy per package: everything a package raises on purpose derives from its
base, keeps the built-in base it had, and a tool says it in one line with exit 2."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import scheduler
import scion_scheduler
import worker
from scheduler.cli_base import EXIT_BAD_INPUT, user_error
from scheduler.config import ConfigError
from scheduler.control import JobNotFound
from scheduler.errors import SchedulerError
from scheduler.jobs_decode import JobDecodeError
from scheduler.model import ValidationError
from scion_scheduler.errors import ScionSchedulerError
from worker.action import ActionError
from worker.cli import worker_error
from worker.errors import WorkerError


def modules(package: ModuleType) -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
             if not info.name.endswith("__main__")]
    return [importlib.import_module(name) for name in names]


@pytest.mark.parametrize(("package", "base"), [
    (scheduler, SchedulerError), (worker, WorkerError), (scion_scheduler, ScionSchedulerError),
], ids=lambda value: getattr(value, "__name__", ""))
def test_every_exception_a_package_defines_derives_from_its_base(
        package: ModuleType, base: type[Exception]) -> None:
    defined = {cls for module in modules(package) for _, cls in inspect.getmembers(module)
               if inspect.isclass(cls) and issubclass(cls, BaseException)
               and cls.__module__ == module.__name__}
    assert base in defined and len(defined) > 2
    assert [cls.__qualname__ for cls in defined if not issubclass(cls, base)] == []


def test_the_old_bases_still_catch_them() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(ValidationError, ValueError)
    assert issubclass(JobNotFound, LookupError) and issubclass(ActionError, WorkerError)


def test_a_refusal_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace()
    assert user_error(args, JobDecodeError("job 'x': no schedule")) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: job 'x': no schedule\n"
    assert worker_error(args, ActionError("refused", retryable=False)) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: refused\n"
    assert user_error(args, ActionError("refused", retryable=False)) is None
    assert user_error(args, RuntimeError("a bug")) is None
