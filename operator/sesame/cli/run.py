"""`sesame run [--remote] FILE TASK [--input value …]`: run a `@sesame.task`, as `pyflyte run` does.

Local (the default): in this process, with the task's secrets read by the SDK exactly as in its pod
(the CLI writes the same names map the operator writes), output masked and the return value
checked by the same code as the pod's runner.

`--remote`: a TaskRun in the project/domain's namespace whose `spec.secrets` are the decorator's
requests, and a ConfigMap holding the task's file and the SDK (so any image with Python 3 works),
owned by the TaskRun so that deleting the run deletes it. The TaskRun is created first and the
ConfigMap right after; the pod mounts the ConfigMap as a non-optional volume, so the kubelet does
not start the container before its code exists. Then the CLI follows the run through the API
server (status, then the log, as `kubectl logs -f` does) and exits with the task's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import secrets
import signal
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import sesame
from sesame import naming
from sesame.cli.errors import CliError, ExitCode, exit_code_table
from sesame.requests import Secret
from sesame.tasks import NotATaskError, Task, TaskLoadError, load_task

if TYPE_CHECKING:
    from sesame.cli.connection import Connection

IMAGE_ENV = "SESAME_TASK_IMAGE"
IMAGE_REPOSITORY = "ghcr.io/sesame-dev/sesame-task"
CONTAINER = "task"
CODE_DIR = "/opt/sesame"
CODE_VOLUME = "sesame-code"
TASK_ANNOTATION = f"{naming.API_GROUP}/task"
CONFIGMAP_LIMIT = 1024 * 1024  # the API server refuses a ConfigMap whose values exceed 1 MiB
NO_STATUS_HINT_AFTER = 30.0
POLL_INTERVAL = 1.0
LOG_READ_TIMEOUT = 24 * 3600.0  # silence that long ends the stream; the outcome is still awaited
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DESCRIPTION = """Run a @sesame.task from a Python file.

Without --remote the task runs here, in this process. Its secrets come from this environment,
read by the SDK exactly as in a pod: a secret with the default delivery from SESAME_SECRET_<KEY>
(the key upper-cased, other characters turned into '_'), one with env_var=NAME from NAME, a FILE
secret from $SESAME_SECRETS_DIR/<key> (default /etc/sesame/secrets). A missing one stops the run
before it starts, naming what to set.

With --remote it runs in the cluster: a TaskRun in the project/domain's namespace asks for the
task's secret_requests, and a ConfigMap owned by the TaskRun carries the file and the Sesame SDK,
so any image with python3 works: --image, else the task's container_image, else
$SESAME_TASK_IMAGE, else {image}:<version> (on the local cluster's node already).
The command then waits: it says what the run waits for (e.g. a secret that does not exist yet,
with the command that creates it), streams the pod's log (the task's stdout and stderr, as the
kubelet recorded them) to stdout, its own lines going to stderr, and exits with the task's exit
code. Ctrl-C stops following; the run goes on.

Either way the values of the task's secrets are replaced by **** in its output, and a task that
returns a secret's value fails (exit 65) without printing it.

Task inputs follow TASK, one --name value per parameter, typed from the annotations (str, int,
float, bool as --flag/--no-flag, list and dict as JSON): `sesame run FILE TASK --help` lists them.
Options of `sesame run` itself go before FILE."""

EXAMPLES = """examples:
  {prog} run examples/using_secrets.py t1
  {prog} run --remote --project my_project --domain development examples/using_secrets.py t1
  {prog} run --remote --project my_project --domain development examples/using_secrets_file.py t1 --no-wait
  {prog} run examples/using_secrets.py t1 --help

exit status: the task's (0; 1 when it raised; n for sys.exit(n); 65 when it returned a secret;
with --remote the container's exit code, e.g. 137 when it was killed); before the task starts,
or when the run fails without an exit code, the codes below."""


def add_parser(verbs: Any, common: argparse.ArgumentParser, prog: str) -> None:
    """Register `run` on the CLI's sub-command parsers."""
    parser = verbs.add_parser(
        "run",
        help="run a @sesame.task here or, with --remote, as a TaskRun",
        description=DESCRIPTION.format(image=IMAGE_REPOSITORY),
        epilog=EXAMPLES.format(prog=prog) + "\n\n" + exit_code_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--remote", action="store_true", help="run in the cluster as a TaskRun")
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        help=f"--remote: the container image, any with python3 (default: the task's container_image, "
        f"${IMAGE_ENV}, or {IMAGE_REPOSITORY}:<version>)",
    )
    parser.add_argument(
        "--name",
        dest="run_name",
        metavar="NAME",
        help="--remote: the TaskRun's name (default: TASK-<random>)",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="--remote: print the TaskRun's name and return at once"
    )
    parser.add_argument(
        "--no-wait-for-secrets",
        action="store_true",
        help=f"--remote: when a requested secret is missing, exit (code {int(ExitCode.SECRET_MISSING)}) "
        "instead of waiting for it; "
        "the TaskRun stays and starts once the secret exists",
    )
    parser.add_argument("file", metavar="FILE", help="the Python file that defines the task")
    parser.add_argument("task", metavar="TASK", help="the name of the @sesame.task in FILE")
    parser.add_argument(
        "inputs", nargs=argparse.REMAINDER, metavar="...", help="the task's inputs: --name value …"
    )


_REMOTE_ONLY = {
    "image": "--image",
    "run_name": "--name",
    "no_wait": "--no-wait",
    "no_wait_for_secrets": "--no-wait-for-secrets",
}


def main(args: argparse.Namespace) -> int:
    """`sesame run`: returns the exit code; CliError for anything that stops it before the task runs."""
    from sesame.cli.main import _prog

    if not args.remote:
        given = [flag for attr, flag in _REMOTE_ONLY.items() if getattr(args, attr)]
        if given:
            raise CliError(ExitCode.USAGE, f"{given[0]} needs --remote")
    task = _load(args.file, args.task)
    try:
        inputs = parse_inputs(task, list(args.inputs), f"{_prog()} run {args.file} {args.task}")
    except InputsHelpShown:
        return int(ExitCode.OK)
    if not args.remote:
        return run_locally(task, inputs)
    return run_remotely(args, task, inputs)


def _load(file: str, name: str) -> Task[..., Any]:
    if not Path(file).is_file():
        raise CliError(ExitCode.FILE_UNREADABLE, f"cannot read {file}: no such file")
    try:
        return load_task(file, name)
    except TaskLoadError as error:
        code = ExitCode.FILE_UNREADABLE if str(error).startswith("cannot read") else ExitCode.TASK_LOAD_FAILED
        raise CliError(code, str(error)) from None
    except NotATaskError as error:
        raise CliError(ExitCode.NOT_A_TASK, str(error)) from None


# -- task inputs --------------------------------------------------------------------------------

_SCALARS: dict[type, str] = {str: "text", int: "integer", float: "number", bool: "flag"}


@dataclass(frozen=True)
class Input:
    name: str
    kind: type  # str, int, float, bool, list or dict
    required: bool
    default: Any


def task_inputs(task: Task[..., Any]) -> list[Input]:
    """The task's parameters as CLI inputs; CliError for one `sesame run` cannot pass."""
    function: Callable[..., Any] = task.function
    try:
        hints = typing.get_type_hints(function)
    except Exception as error:
        raise CliError(
            ExitCode.USAGE,
            f"cannot read the annotations of task {task.name!r}: {type(error).__name__}: {error}",
        ) from None
    inputs = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise CliError(
                ExitCode.USAGE,
                f"task {task.name!r} input {parameter.name!r} cannot be passed by name: sesame run passes "
                "inputs as --name value (no positional-only, *args or **kwargs)",
            )
        kind = _kind(hints.get(parameter.name, str))
        if kind is None:
            raise CliError(
                ExitCode.USAGE,
                f"task {task.name!r} input {parameter.name!r} is annotated {hints[parameter.name]!r}; "
                "sesame run passes str, int, float, bool, list and dict",
            )
        required = parameter.default is inspect.Parameter.empty
        inputs.append(Input(parameter.name, kind, required, None if required else parameter.default))
    return inputs


def _kind(annotation: Any) -> type | None:
    """The basic type of an annotation (`int`, `list[str]` → list, `int | None` → int), or None."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _kind(members[0]) if len(members) == 1 else None
    if annotation is Any:
        return str
    base = origin or annotation
    return base if base in (str, int, float, bool, list, dict) else None


class InputsHelpShown(Exception):
    """`--help` after TASK printed the task's inputs."""


class _InputParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CliError(ExitCode.USAGE, f"{message} (see `{self.prog} --help`)")


def _json_of(kind: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, kind):
            example = "[1, 2]" if kind is list else '{"a": 1}'
            raise argparse.ArgumentTypeError(f"expected a JSON {kind.__name__}, e.g. {example}")
        return value

    convert.__name__ = f"JSON {kind.__name__}"
    return convert


def parse_inputs(task: Task[..., Any], argv: list[str], prog: str) -> dict[str, Any]:
    """The task's keyword arguments from `--name value` options; `--help` prints them and exits."""
    doc = (inspect.getdoc(task.function) or "").split("\n\n")[0]
    parser = _InputParser(
        prog=prog,
        description=f"Inputs of task {task.name}." + (f" {doc}" if doc else ""),
        allow_abbrev=False,
        add_help=True,
    )
    for item in task_inputs(task):
        flags = list(dict.fromkeys([f"--{item.name}", f"--{item.name.replace('_', '-')}"]))
        default = "required" if item.required else f"default: {item.default!r}"
        if item.kind is bool:
            parser.add_argument(
                *flags,
                dest=item.name,
                action=argparse.BooleanOptionalAction,
                required=item.required,
                default=argparse.SUPPRESS,
                help=f"flag ({default})",
            )
            continue
        converter: Callable[[str], Any] = item.kind if item.kind in _SCALARS else _json_of(item.kind)
        parser.add_argument(
            *flags,
            dest=item.name,
            type=converter,
            required=item.required,
            default=argparse.SUPPRESS,
            metavar=item.kind.__name__.upper(),
            help=f"{_SCALARS.get(item.kind, 'JSON ' + item.kind.__name__)} ({default})",
        )
    try:
        parsed = parser.parse_args(argv)
    except SystemExit:  # only --help exits: every error raised CliError
        raise InputsHelpShown from None
    return dict(vars(parsed))


# -- local --------------------------------------------------------------------------------------


def local_environment(requests: tuple[Secret, ...], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a pod of this task would have that this environment lacks: the names map,
    and the file path in a FILE request's env_var."""
    directory = Path(environ.get(naming.SECRETS_DIR_ENV) or naming.SECRETS_DIR)
    names = {r.key: r.env_var_name for r in requests if not r.is_file and r.env_var_name}
    added = {naming.ENV_VARS_ENV: json.dumps(names, sort_keys=True)}
    for request in requests:
        if request.is_file and request.env_var:
            added[request.env_var] = str(directory / request.key)
    return added


def missing_locally(requests: tuple[Secret, ...], environ: Mapping[str, str]) -> str | None:
    """One line naming the secrets this environment does not provide and how to provide them."""
    reader = sesame.Secrets(environ)
    missing = []
    for request in requests:
        if request.is_file:
            if not (reader.directory / request.key).is_file():
                missing.append(
                    f"FILE secret {request.key!r}: put it in {reader.directory / request.key} "
                    f"(or point {naming.SECRETS_DIR_ENV} at a directory that has it)"
                )
        elif reader.env_var(request.key) not in environ:
            missing.append(f"secret {request.key!r}: export {reader.env_var(request.key)}=<its value>")
    if not missing:
        return None
    more = (
        f" (and {len(missing) - 1} more: {', '.join(m.split(':')[0] for m in missing[1:])})"
        if missing[1:]
        else ""
    )
    return (
        f"{missing[0]}{more} — when run locally a task reads its secrets from this environment; "
        "`sesame run --remote` uses the stored ones"
    )


def run_locally(task: Task[..., Any], inputs: dict[str, Any]) -> int:
    from sesame import runner

    environ = {**os.environ, **local_environment(task.secret_requests, os.environ)}
    problem = missing_locally(task.secret_requests, environ)
    if problem:
        raise CliError(ExitCode.SECRET_MISSING, problem)
    os.environ.update(local_environment(task.secret_requests, os.environ))
    values = runner.read_secrets(request.key for request in task.secret_requests)
    for key in runner.short_secrets(values):
        print(
            f"sesame: secret {key!r} is shorter than {runner.MIN_MASKED} bytes; it is not masked",
            file=sys.stderr,
        )
    with runner.masked_output(values.values()):
        return runner.run_task(task, inputs, values)


# -- remote -------------------------------------------------------------------------------------


def default_image() -> str:
    from sesame.cli.main import _version

    version = _version()
    if version == "unknown":
        raise CliError(
            ExitCode.USAGE,
            f"cannot tell Sesame's version for the default image: pass --image or set {IMAGE_ENV}",
        )
    return f"{IMAGE_REPOSITORY}:{version}"


def code_files(task_file: Path) -> tuple[str, dict[str, bytes], list[dict[str, str]]]:
    """(module path in the pod, ConfigMap entries, volume items): the task's file and the SDK."""
    package = Path(sesame.__file__).parent
    entries = {
        f"sesame.{module}.py": (package / f"{module}.py").read_bytes() for module in sesame.SDK_MODULES
    }
    items = [{"key": f"sesame.{module}.py", "path": f"sesame/{module}.py"} for module in sesame.SDK_MODULES]
    stem = task_file.stem if task_file.stem.isidentifier() and task_file.stem != "sesame" else "task"
    entries["task.py"] = task_file.read_bytes()
    items.append({"key": "task.py", "path": f"{stem}.py"})
    return f"{CODE_DIR}/{stem}.py", entries, items


def _size(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def build_objects(
    task: Task[..., Any], inputs: dict[str, Any], task_file: Path, name: str, namespace: str, image: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TaskRun, ConfigMap without its owner) for one remote run."""
    module_path, entries, items = code_files(task_file)
    total = sum(len(value) for value in entries.values())
    if total > CONFIGMAP_LIMIT:
        sdk = total - len(entries["task.py"])
        raise CliError(
            ExitCode.CODE_TOO_LARGE,
            f"{task_file} is {_size(len(entries['task.py']))}; with the Sesame SDK ({_size(sdk)}) that is "
            "over the 1 MiB a ConfigMap holds: keep the task's file small and put large code or data in "
            "the image",
        )
    data, binary = {}, {}
    for key, value in entries.items():
        try:
            data[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            binary[key] = base64.b64encode(value).decode("ascii")
    annotations = {TASK_ANNOTATION: f"{task_file.name}:{task.name}"}
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["python3", "-m", "sesame.runner"],
        "args": [module_path, task.name, json.dumps(inputs, sort_keys=True)],
        "env": [{"name": "PYTHONPATH", "value": CODE_DIR}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": [{"name": CODE_VOLUME, "mountPath": CODE_DIR, "readOnly": True}],
    }
    taskrun = {
        "apiVersion": f"{naming.API_GROUP}/{naming.API_VERSION}",
        "kind": "TaskRun",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "secrets": [request.to_spec() for request in task.secret_requests],
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    # Not optional: the kubelet waits for the ConfigMap rather than start without the code.
                    "volumes": [
                        {"name": CODE_VOLUME, "configMap": {"name": name, "items": items, "optional": False}}
                    ],
                },
            },
        },
    }
    configmap: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {naming.TASKRUN_LABEL: name}},
        "data": data,
    }
    if binary:
        configmap["binaryData"] = binary
    return taskrun, configmap


def run_name(task: Task[..., Any], given: str | None) -> str:
    if given is not None:
        if len(given) > naming.MAX_LABEL_LENGTH or not _DNS_LABEL.fullmatch(given):
            raise CliError(
                ExitCode.USAGE,
                f"--name {given!r} is not a valid TaskRun name "
                "(lower-case letters, digits and '-', at most 63)",
            )
        return given
    base = re.sub(r"[^a-z0-9-]", "", task.name.lower().replace("_", "-")).strip("-")[:48].strip("-")
    return f"{base or 'task'}-{secrets.token_hex(3)}"


def _check_containers(task: Task[..., Any]) -> None:
    for request in task.secret_requests:
        if request.containers is not None and CONTAINER not in request.containers:
            raise CliError(
                ExitCode.USAGE,
                f"secret {request.key!r} is for containers {list(request.containers)}, but "
                f"sesame run --remote runs one container, {CONTAINER!r}: leave containers out",
            )


def run_remotely(args: argparse.Namespace, task: Task[..., Any], inputs: dict[str, Any]) -> int:
    from sesame.cli.connection import connect
    from sesame.cli.main import DEFAULT_TIMEOUT, resolve_target

    target = resolve_target(args)
    _check_containers(task)
    image = args.image or task.container_image or os.environ.get(IMAGE_ENV) or default_image()
    name = run_name(task, args.run_name)
    taskrun, configmap = build_objects(task, inputs, Path(args.file), name, target.namespace, image)
    timeout = getattr(args, "request_timeout", None) or DEFAULT_TIMEOUT
    connection = connect(getattr(args, "kubeconfig", None), getattr(args, "context", None), timeout)
    try:
        created = _submit(connection, target, taskrun, configmap)
        namespace = target.namespace
        follow = [f"kubectl -n {namespace} get taskrun {name} -w", f"kubectl -n {namespace} logs -f {name}"]
        if args.no_wait:
            print(name)
            _say(f"TaskRun {name} created in namespace {namespace!r} (image {image}); follow it with:")
        else:
            _say(
                f"TaskRun {name} created in namespace {namespace!r} (image {image}); it can be followed with:"
            )
        for command in follow:
            print(f"  {command}", file=sys.stderr, flush=True)
        if args.no_wait:
            return int(ExitCode.OK)
        try:
            return Follower(connection, namespace, name, created, not args.no_wait_for_secrets).run()
        except KeyboardInterrupt:
            print(file=sys.stderr)
            _say(f"stopped following; TaskRun {name} goes on (kubectl -n {namespace} logs -f {name})")
            return int(ExitCode.INTERRUPTED)
    finally:
        connection.close()


def _say(line: str) -> None:
    print(f"sesame: {line}", file=sys.stderr, flush=True)


def _api_call(connection: Connection, call: Callable[[], Any]) -> Any:
    """One API call; a transport failure becomes the CLI's one-line `unreachable` error."""
    import urllib3.exceptions

    from sesame.cli.connection import unreachable

    try:
        return call()
    except urllib3.exceptions.HTTPError as error:
        raise unreachable(error, connection.host, connection.timeout) from None


def _submit(
    connection: Connection, target: Any, taskrun: dict[str, Any], configmap: dict[str, Any]
) -> dict[str, Any]:
    """Create the TaskRun, then its ConfigMap owned by it; on a failure in between, delete the run."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from sesame.cli.connection import raise_api_error, status_kind, status_message

    namespace, name = target.namespace, taskrun["metadata"]["name"]
    custom = client.CustomObjectsApi(connection.api)
    group, version = naming.API_GROUP, naming.API_VERSION
    try:
        created: dict[str, Any] = _api_call(
            connection,
            lambda: custom.create_namespaced_custom_object(
                group,
                version,
                namespace,
                naming.TASKRUN_PLURAL,
                taskrun,
                _request_timeout=connection.request_timeout,
            ),
        )
    except ApiException as error:
        if error.status == 404 and status_kind(error) == "namespaces":
            raise CliError(
                ExitCode.NAMESPACE_NOT_FOUND,
                f"namespace {namespace!r} not found ({target.origin}); create it "
                f"(kubectl create namespace {namespace}) or check the project and domain",
            ) from None
        if error.status == 404:
            raise CliError(
                ExitCode.ERROR,
                "the cluster has no TaskRun resource: install Sesame first "
                "(helm install sesame charts/sesame, or kubectl apply -f crds/)",
            ) from None
        if error.status == 409:
            raise CliError(
                ExitCode.ALREADY_EXISTS,
                f"TaskRun {name!r} already exists in namespace {namespace!r}; choose another --name",
            ) from None
        if error.status in (400, 422):
            raise CliError(
                ExitCode.ERROR, f"the API server refused the TaskRun: {status_message(error)}"
            ) from None
        raise_api_error(error, "create", "taskruns", namespace)
    meta = created["metadata"]
    configmap["metadata"]["ownerReferences"] = [
        {"apiVersion": f"{group}/{version}", "kind": "TaskRun", "name": name, "uid": meta["uid"]}
    ]
    try:
        _api_call(
            connection,
            lambda: connection.core.create_namespaced_config_map(
                namespace,
                typing.cast(Any, configmap),  # the client sends a plain dict as it is
                _request_timeout=connection.request_timeout,
            ),
        )
    except BaseException as error:  # Ctrl-C included: a run whose code never comes must not stay
        with contextlib.suppress(Exception):
            custom.delete_namespaced_custom_object(
                group,
                version,
                namespace,
                naming.TASKRUN_PLURAL,
                name,
                _request_timeout=connection.request_timeout,
            )
        if not isinstance(error, ApiException):
            raise
        if error.status == 409:
            raise CliError(
                ExitCode.ALREADY_EXISTS,
                f"ConfigMap {name!r} already exists in namespace {namespace!r}; choose another --name",
            ) from None
        raise_api_error(error, "create", "configmaps", namespace)
    return created


class Follower:
    """Follows one TaskRun through the API server until it ends, saying what it waits for."""

    def __init__(
        self,
        connection: Connection,
        namespace: str,
        name: str,
        taskrun: dict[str, Any],
        wait_for_secrets: bool,
    ) -> None:
        from kubernetes import client

        self.connection = connection
        self.namespace = namespace
        self.name = name
        self.taskrun = taskrun
        self.wait_for_secrets = wait_for_secrets
        self.custom = client.CustomObjectsApi(connection.api)
        self.said: set[str] = set()
        self.streamed = False
        self.started = time.monotonic()
        self.pod_ended_at: float | None = None
        self.interrupted = False
        self.in_log_stream = False

    def _on_interrupt(self, signum: int, frame: types.FrameType | None) -> None:
        """Ctrl-C: stop at the next safe point, not inside the HTTP pool's locks (a hang on close).

        Only a log stream, blocked in one read for as long as the task is silent, is left at once.
        """
        self.interrupted = True
        if self.in_log_stream:
            raise KeyboardInterrupt

    def _stop_if_interrupted(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt

    def say_once(self, line: str) -> None:
        if line not in self.said:
            self.said.add(line)
            _say(line)

    def _get(self, call: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        from sesame.cli.connection import raise_api_error

        try:
            return _api_call(self.connection, call)
        except ApiException as error:
            if error.status == 404:
                return None
            raise_api_error(error, "get", "taskruns and pods", self.namespace)

    def run(self) -> int:
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        try:
            return self._follow()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _follow(self) -> int:
        while True:
            self._stop_if_interrupted()
            taskrun = self._get(
                lambda: self.custom.get_namespaced_custom_object(
                    naming.API_GROUP,
                    naming.API_VERSION,
                    self.namespace,
                    naming.TASKRUN_PLURAL,
                    self.name,
                    _request_timeout=self.connection.request_timeout,
                )
            )
            if taskrun is None:
                raise CliError(ExitCode.TASK_FAILED, f"TaskRun {self.name} was deleted before it finished")
            status = taskrun.get("status") or {}
            self._waiting_for_secrets(status)
            if not status and time.monotonic() - self.started > NO_STATUS_HINT_AFTER:
                self.say_once(
                    f"TaskRun {self.name} has no status after {NO_STATUS_HINT_AFTER:.0f}s: is the Sesame "
                    f"operator running and watching namespace {self.namespace!r}?"
                )
            pod = self._pod()
            state = _container_state(pod)
            if state.get("waiting"):
                waiting = state["waiting"]
                if waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
                    detail = f": {waiting['message']}" if waiting.get("message") else ""
                    self.say_once(f"pod {self.name} is waiting: {waiting.get('reason')}{detail}")
            elif state and not self.streamed:
                self.streamed = True
                self._stream_log()
                continue
            done = self._outcome(status, pod, state)
            if done is not None:
                return done
            self._stop_if_interrupted()
            time.sleep(POLL_INTERVAL)  # at most this long after Ctrl-C

    def _waiting_for_secrets(self, status: Mapping[str, Any]) -> None:
        condition = next((c for c in status.get("conditions") or [] if c.get("type") == "SecretsReady"), None)
        if condition is None or condition.get("status") != "False":
            return
        message = condition.get("message") or condition.get("reason") or "a requested secret is not ready"
        if not self.wait_for_secrets:
            raise CliError(
                ExitCode.SECRET_MISSING,
                f"TaskRun {self.name} waits: {message} (it starts by itself once that is fixed; "
                f"delete it with kubectl -n {self.namespace} delete taskrun {self.name})",
            )
        self.say_once(f"waiting: {message} — the run starts by itself once that is done")

    def _pod(self) -> dict[str, Any] | None:
        pod = self._get(
            lambda: self.connection.core.read_namespaced_pod(
                self.name, self.namespace, _request_timeout=self.connection.request_timeout
            )
        )
        if pod is None:
            return None
        result: dict[str, Any] = self.connection.api.sanitize_for_serialization(pod)
        return result

    def _stream_log(self) -> None:
        """The container's log as it is written, through the API server (`kubectl logs -f`)."""
        import urllib3.exceptions
        from kubernetes.client.exceptions import ApiException

        try:
            # Unparsed: a urllib3 response, read as it arrives. A task may be silent for long.
            response: Any = self.connection.core.read_namespaced_pod_log(
                self.name,
                self.namespace,
                container=CONTAINER,
                follow=True,
                _preload_content=False,
                _request_timeout=(self.connection.timeout, LOG_READ_TIMEOUT),
            )
        except ApiException:
            self.streamed = False  # not ready to be read yet (the container is only starting)
            time.sleep(POLL_INTERVAL)
            return
        except urllib3.exceptions.HTTPError:
            self.say_once(f"cannot stream the log; read it with kubectl -n {self.namespace} logs {self.name}")
            return
        out = sys.stdout.buffer
        try:
            self.in_log_stream = True
            self._stop_if_interrupted()
            for chunk in response.stream(65536, decode_content=False):
                out.write(chunk)
                out.flush()
        except urllib3.exceptions.HTTPError:
            self.say_once(
                f"the log stream broke; read the rest with kubectl -n {self.namespace} logs {self.name}"
            )
        finally:
            self.in_log_stream = False
            response.release_conn()

    def _outcome(
        self, status: Mapping[str, Any], pod: Mapping[str, Any] | None, state: Mapping[str, Any]
    ) -> int | None:
        """The exit code once the run has ended (the pod's, as the kubelet reported it), else None."""
        phase = status.get("phase")
        terminated = state.get("terminated")
        pod_phase = ((pod or {}).get("status") or {}).get("phase")
        pod_done = terminated is not None and pod_phase in ("Succeeded", "Failed")
        if pod_done and self.pod_ended_at is None:
            self.pod_ended_at = time.monotonic()
        run_done = phase in ("Succeeded", "Failed")
        # The operator mirrors the pod into the TaskRun within a moment; do not wait for it forever.
        waited_enough = self.pod_ended_at is not None and time.monotonic() - self.pod_ended_at > 10
        if not run_done and not waited_enough:
            return None
        if terminated is not None:
            code = int(terminated.get("exitCode", 0))
            reason = terminated.get("reason") or ""
            shown = phase or pod_phase
            _say(
                f"TaskRun {self.name} {shown}"
                + (f" (exit code {code}{', ' + reason if reason else ''})" if code else "")
            )
            return code
        if phase == "Succeeded":
            _say(f"TaskRun {self.name} Succeeded")
            return 0
        message = status.get("message") or next(
            (c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), ""
        )
        raise CliError(ExitCode.TASK_FAILED, f"TaskRun {self.name} failed without an exit code: {message}")


def _container_state(pod: Mapping[str, Any] | None) -> dict[str, Any]:
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status.get("state") or {})
    return {}
