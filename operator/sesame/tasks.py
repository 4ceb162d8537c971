"""`@sesame.task(secret_requests=[sesame.Secret(...)])`: a task as users of Flyte and Union write it.

The decorator keeps the function callable exactly as before and records which secrets it needs;
`sesame run` (local, or `--remote` as a TaskRun) reads those requests. Stdlib only: part of the SDK
shipped into task pods, where the runner (`sesame.runner`) loads the same file.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from sesame.requests import RequestError, Secret, check_request_set

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function with the secrets it needs. Calling it calls the function, nothing more."""

    def __init__(
        self, function: Callable[P, R], secret_requests: Iterable[Secret], container_image: str | None
    ) -> None:
        self.function = function
        self.name: str = getattr(function, "__name__", "task")
        self.secret_requests: tuple[Secret, ...] = _checked(self.name, secret_requests)
        self.container_image = container_image
        functools.update_wrapper(self, function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        keys = ", ".join(request.key for request in self.secret_requests)
        return f"<sesame.task {self.name} secrets=[{keys}]>"


def _checked(name: str, secret_requests: Iterable[Secret]) -> tuple[Secret, ...]:
    """The requests, refused when they could never be delivered together to one container."""
    if isinstance(secret_requests, (str, Secret)):
        raise RequestError(
            f"@sesame.task {name}: secret_requests must be a list, e.g. [sesame.Secret(key=...)]"
        )
    requests = tuple(secret_requests)
    for request in requests:
        if not isinstance(request, Secret):
            raise RequestError(
                f"@sesame.task {name}: secret_requests holds {request!r} ({type(request).__name__}); "
                "write sesame.Secret(key=...) for each secret"
            )
    check_request_set(requests, f"@sesame.task {name} secret_requests")
    owners: dict[str, str] = {}
    for request in requests:
        env_var = request.env_var_name
        if env_var is None:
            continue
        owner = owners.setdefault(env_var, request.key)
        if owner != request.key:
            raise RequestError(
                f"@sesame.task {name}: secrets {owner!r} and {request.key!r} both set env var {env_var!r}; "
                "give one of them a different env_var"
            )
    return requests


@overload
def task(function: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *, secret_requests: Iterable[Secret] = (), container_image: str | None = None
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    function: Callable[P, R] | None = None,
    /,
    *,
    secret_requests: Iterable[Secret] = (),
    container_image: str | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare a task and the secrets it needs: `@sesame.task` or `@sesame.task(secret_requests=[...])`.

    `container_image` is the image `sesame run --remote` uses for it unless `--image` is given;
    any image with Python 3 works, because the run ships the SDK alongside the task's file.
    """
    if function is not None:
        return Task(function, secret_requests, container_image)

    def decorate(inner: Callable[P, R]) -> Task[P, R]:
        return Task(inner, secret_requests, container_image)

    return decorate


class TaskLoadError(Exception):
    """The task file could not be read or imported; the message is one line."""


class NotATaskError(LookupError):
    """The file has no `@sesame.task` of that name; the message lists the ones it has."""


def load_task(path: str | Path, name: str) -> Task[..., Any]:
    """Import the file `path` as a module (its directory first on sys.path, as `python path` would)
    and return its task `name`."""
    file = Path(path)
    # The module's own name, unless that would replace another module already loaded (`sesame`, `json`).
    loaded = sys.modules.get(file.stem)
    taken = loaded is not None and getattr(loaded, "__file__", None) != str(file)
    module_name = file.stem if file.stem.isidentifier() and not taken else "__sesame_task__"
    try:
        source = file.read_bytes()
    except OSError as error:
        raise TaskLoadError(
            f"cannot read {file}: {(error.strerror or type(error).__name__).lower()}"
        ) from None
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise TaskLoadError(f"cannot load {file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickle and typing look the module up by name
    directory = str(file.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # noqa: S102 (running it is the point)
    except SyntaxError as error:
        raise TaskLoadError(f"cannot load {file}: SyntaxError: {error.msg} (line {error.lineno})") from None
    except (Exception, SystemExit) as error:  # whatever the module raises on import
        line = _line_in(error, file)
        detail = str(error).splitlines()[0] if str(error) else ""
        raise TaskLoadError(
            f"cannot load {file}: {type(error).__name__}{': ' + detail if detail else ''}{line}"
        ) from None
    found = getattr(module, name, None)
    if isinstance(found, Task):
        return found
    tasks = sorted(attr for attr, value in vars(module).items() if isinstance(value, Task))
    listed = f"its tasks: {', '.join(tasks)}" if tasks else "it has no @sesame.task"
    if found is None:
        raise NotATaskError(f"{file} has no task named {name!r} ({listed})")
    raise NotATaskError(f"{name!r} in {file} is not decorated with @sesame.task ({listed})")


def _line_in(error: BaseException, file: Path) -> str:
    """` (line N)`: where in `file` the error came from, if it did."""
    traceback = error.__traceback__
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == str(file):
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return f" (line {line})" if line else ""
