"""`sesame create|get|update|delete secret …` — the commands users know from `union`.

Every failure the user can act on is one line on stderr, `error: …`, with its own exit code
(sesame.cli.errors.ExitCode). No traceback, and never a secret value: values are read from a
prompt without echo, from stdin or from a file, and only ever sent to the API server.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sesame import naming
from sesame.cli.errors import CliError, ExitCode, exit_code_table

if TYPE_CHECKING:
    from sesame.cli.store import Target

DEFAULT_TIMEOUT = 30.0
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

CREATE_PROMPT = "Enter secret value: "
UPDATE_PROMPT = "Enter new secret value: "


def _prog() -> str:
    """`kubectl sesame` when kubectl runs us as its plugin `kubectl-sesame`."""
    return "kubectl sesame" if Path(sys.argv[0]).name.startswith("kubectl-") else "sesame"


# -- argument parsing ---------------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes, before or after the verb (SUPPRESS: the last one given wins)."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the secret lives")
    where.add_argument("--project", default=argparse.SUPPRESS, help="project of the secret")
    where.add_argument("--domain", default=argparse.SUPPRESS, help="domain of the secret (e.g. development)")
    where.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="use this namespace directly instead of deriving it from --project and --domain",
    )
    where.add_argument(
        "--namespace-template",
        default=argparse.SUPPRESS,
        metavar="TEMPLATE",
        help=f"how project and domain name the namespace (env {naming.NAMESPACE_TEMPLATE_ENV}; "
        f"default {naming.DEFAULT_NAMESPACE_TEMPLATE})",
    )
    cluster = common.add_argument_group("cluster")
    cluster.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    cluster.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use")
    cluster.add_argument(
        "--request-timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help=f"give up on an API request after this long (default {DEFAULT_TIMEOUT:g})",
    )
    return common


EXAMPLES = {
    "create": """examples:
  # prompts "Enter secret value: " without echo
  {prog} create secret --project my_project --domain development my_secret
  # from stdin (stored exactly as read; printf adds no trailing newline)
  printf '%s' "$TOKEN" | {prog} create secret --project my_project --domain development my_union_api_key
  # a file, byte for byte (binary is fine)
  {prog} create secret --project my_project --domain development gcp_sa -f ./sa.json""",
    "get": """examples:
  {prog} get secret --project my_project --domain development
  {prog} get secret --project my_project --domain development my_secret -o yaml
  {prog} get secret --namespace my-project-development -o json""",
    "update": """examples:
  # prompts "Enter new secret value: " without echo
  {prog} update secret --project my_project --domain development my_secret
  {prog} update secret --project my_project --domain development gcp_sa -f ./new-sa.json""",
    "delete": """examples:
  {prog} delete secret --project my_project --domain development my_secret""",
}

TOP_EXAMPLES = """examples:
  {prog} create secret --project my_project --domain development my_secret
  {prog} get secret --project my_project --domain development
  {prog} update secret --project my_project --domain development my_secret
  {prog} delete secret --project my_project --domain development my_secret
  {prog} get secret --help

The namespace is the template {{project}}-{{domain}}, lower-cased with '_' turned into '-'
(my_project + development -> my-project-development), unless --namespace is given."""

DESCRIPTIONS = {
    "create": "Store a new secret. The value comes from -f FILE (byte for byte), from a prompt without "
    "echo when stdin is a terminal, or else from all of stdin (exactly as read).",
    "get": "List secrets, or show one: names, source (value or file) and dates. Never the value. "
    "Only Secrets labelled app.kubernetes.io/managed-by=sesame are shown.",
    "update": "Replace the value of an existing secret (prompt, stdin or -f FILE, as for create).",
    "delete": "Delete a secret.",
}


def build_parser() -> argparse.ArgumentParser:
    prog = _prog()
    common = _common_options()
    formatter = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(
        prog=prog,
        description="Store the secrets that Sesame delivers to task pods, per project and domain.",
        epilog=TOP_EXAMPLES.format(prog=prog) + "\n\n" + exit_code_table(),
        formatter_class=formatter,
        parents=[common],
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = top.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb, summary in [
        ("create", "create a secret"),
        ("get", "list secrets or show one (never values)"),
        ("update", "change a secret's value"),
        ("delete", "delete a secret"),
    ]:
        verb_parser = verbs.add_parser(
            verb,
            help=summary,
            description=DESCRIPTIONS[verb],
            epilog=EXAMPLES[verb].format(prog=prog),
            formatter_class=formatter,
            parents=[common],
        )
        kinds = verb_parser.add_subparsers(dest="kind", metavar="KIND", required=True)
        leaf = kinds.add_parser(
            "secret",
            aliases=["secrets"],
            help=summary,
            description=DESCRIPTIONS[verb],
            epilog=EXAMPLES[verb].format(prog=prog) + "\n\n" + exit_code_table(),
            formatter_class=formatter,
            parents=[common],
        )
        if verb == "get":
            leaf.add_argument("name", nargs="?", metavar="NAME", help="the secret (key); all when omitted")
            leaf.add_argument(
                "-o", "--output", choices=["table", "json", "yaml"], default="table", help="output format"
            )
        else:
            leaf.add_argument("name", metavar="NAME", help="the secret's name (its key)")
        if verb in ("create", "update"):
            leaf.add_argument(
                "-f",
                "--file",
                metavar="FILE",
                help="read the value from FILE, byte for byte (binary is fine)",
            )
    return top


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sesame")
    except PackageNotFoundError:
        return "unknown"


# -- namespace ----------------------------------------------------------------------------------


def resolve_target(args: argparse.Namespace) -> Target:
    from sesame.cli.store import Target

    namespace = getattr(args, "namespace", None)
    if namespace:
        if len(namespace) > naming.MAX_LABEL_LENGTH or not _DNS_LABEL.fullmatch(namespace):
            raise CliError(
                ExitCode.USAGE,
                f"--namespace {namespace!r} is not a valid namespace name "
                "(lower-case letters, digits and '-', at most 63)",
            )
        return Target(namespace, "given with --namespace")
    template = getattr(args, "namespace_template", None)
    template_origin = "--namespace-template"
    if not template:
        template = os.environ.get(naming.NAMESPACE_TEMPLATE_ENV)
        template_origin = naming.NAMESPACE_TEMPLATE_ENV
    if not template:
        template, template_origin = naming.DEFAULT_NAMESPACE_TEMPLATE, "default"
    project, domain = getattr(args, "project", None), getattr(args, "domain", None)
    if not project or not domain:
        raise CliError(ExitCode.USAGE, "give --project and --domain (or --namespace)")
    try:
        namespace = naming.namespace_for(project, domain, template)
    except naming.NamingError as error:
        raise CliError(ExitCode.USAGE, str(error)) from None
    origin = f"from --project {project} --domain {domain} with template {template}"
    if template_origin != "default":
        origin += f" from {template_origin}"
    return Target(namespace, origin)


# -- values -------------------------------------------------------------------------------------


class ValueSource:
    """Reads the value once, when the command is ready for it, and remembers it only so that
    error messages can be scrubbed of it."""

    def __init__(self, file: str | None, prompt: str, stdin: BinaryIO, stdin_is_tty: bool) -> None:
        self.file = file
        self.prompt = prompt
        self.stdin = stdin
        self.stdin_is_tty = stdin_is_tty
        self.value: bytes | None = None

    def __call__(self) -> tuple[bytes, str]:
        limit = naming.MAX_SECRET_BYTES
        if self.file is not None:
            try:
                with open(self.file, "rb") as handle:
                    value = handle.read(limit + 1)
            except OSError as error:
                reason = (error.strerror or type(error).__name__).lower()
                raise CliError(ExitCode.FILE_UNREADABLE, f"cannot read {self.file}: {reason}") from None
            source, where = "file", f"file {self.file}"
        elif self.stdin_is_tty:
            try:
                value = getpass.getpass(self.prompt).encode("utf-8", "surrogateescape")
            except EOFError:
                value = b""
            source, where = "value", "the value typed"
        else:
            value = self.stdin.read(limit + 1)
            source, where = "value", "stdin"
        self.value = value
        if len(value) > limit:
            raise CliError(
                ExitCode.TOO_LARGE,
                f"{where} is over {limit} bytes (1 MiB), the most a Kubernetes Secret can hold",
            )
        if not value:
            raise CliError(ExitCode.EMPTY_VALUE, f"{where} is empty; a secret needs a value")
        return value, source


def scrub(message: str, value: bytes | None) -> str:
    """Defence in depth: messages are built from names, but if a value ever slipped into one
    (say, quoted by the API server), it is masked. Values shorter than 4 bytes are not searched
    for, or every message would be mangled."""
    if not value or len(value) < 4:
        return " ".join(message.split())
    import base64

    forms = {value.decode("utf-8", "replace"), base64.b64encode(value).decode("ascii")}
    forms |= {line for line in value.decode("utf-8", "replace").splitlines() if len(line) >= 4}
    for form in sorted(forms, key=len, reverse=True):
        if form:
            message = message.replace(form, "***")
    return " ".join(message.split())


# -- output -------------------------------------------------------------------------------------


def render(infos: Sequence[Any], output: str, single: bool) -> str:
    rows = [info.to_dict() for info in infos]
    if output == "json":
        return json.dumps(rows[0] if single else rows, indent=2)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(rows[0] if single else rows, sort_keys=False)).rstrip("\n")
    header = ["NAME", "SOURCE", "CREATED", "UPDATED"]
    table = [header] + [[r["name"], r["source"], r["created"], r["updated"]] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


# -- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace, values: ValueSource | None) -> int:
    from sesame.cli.connection import connect
    from sesame.cli.store import SecretStore

    target = resolve_target(args)
    if args.name is not None:  # refuse a bad key before connecting or prompting
        from sesame.cli.store import object_name

        object_name(args.name)
    timeout = getattr(args, "request_timeout", None) or DEFAULT_TIMEOUT
    connection = connect(getattr(args, "kubeconfig", None), getattr(args, "context", None), timeout)
    try:
        store = SecretStore(connection, target)
        where = f"namespace {target.namespace!r}"
        if args.verb == "create":
            assert values is not None
            store.create(args.name, values)
            print(f"secret {args.name!r} created in {where}")
        elif args.verb == "update":
            assert values is not None
            store.update(args.name, values)
            print(f"secret {args.name!r} updated in {where}")
        elif args.verb == "delete":
            store.delete(args.name)
            print(f"secret {args.name!r} deleted from {where}")
        elif args.name is not None:
            print(render([store.get(args.name)], args.output, single=True))
        else:
            infos = store.list()
            if infos or args.output != "table":
                print(render(infos, args.output, single=False))
            else:
                print(f"No secrets found in namespace {target.namespace!r}.", file=sys.stderr)
    finally:
        connection.close()
    return ExitCode.OK


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error argparse already printed
        return done.code if isinstance(done.code, int) else int(ExitCode.USAGE if done.code else ExitCode.OK)
    values: ValueSource | None = None
    if args.verb in ("create", "update"):
        values = ValueSource(
            args.file,
            CREATE_PROMPT if args.verb == "create" else UPDATE_PROMPT,
            sys.stdin.buffer,
            sys.stdin.isatty(),
        )
    try:
        return run(args, values)
    except CliError as error:
        typed = values.value if values is not None else None
        print(f"error: {scrub(error.message, typed)}", file=sys.stderr)
        return int(error.code)
    except KeyboardInterrupt:
        print("\nerror: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `sesame get secret | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as error:  # a bug or an unexpected library failure: still one line, no value
        typed = values.value if values is not None else None
        detail = scrub(str(error).splitlines()[0] if str(error) else "", typed)
        print(f"error: unexpected {type(error).__name__}: {detail}", file=sys.stderr)
        return int(ExitCode.ERROR)
