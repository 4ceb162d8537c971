"""`sesame create|get|update|delete secret …` — the commands users know from `union`.

Every failure the user can act on is one line on stderr, `error: …`, with its own exit code
(sesame.cli.errors.ExitCode). No traceback, and never a secret value: values are read from a
prompt without echo, from stdin or from a file, and only ever sent to the API server.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sesame import naming
from sesame.cli.errors import CliError, ExitCode, exit_code_table
from sesame.cli.values import ValueSource

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


class Parser(argparse.ArgumentParser):
    """Usage errors in the shape of every other error: one line, `error: …`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _seconds(text: str) -> float:
    """A timeout: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return seconds


def _common_options() -> Parser:
    """Options every command takes, before or after the verb (SUPPRESS: the last one given wins)."""
    common = Parser(add_help=False)
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
        type=_seconds,
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

VALUES = """Where the value comes from, in this order:
  -f FILE   the file, byte for byte (binary is fine).
  stdin     when stdin is not a terminal: all of it, exactly as read. A single line that
            ends in a newline (what `echo` writes) keeps the newline, with a warning on
            stderr; printf '%s' leaves it out.
  a prompt  when stdin is a terminal: one line, never echoed. Refused (exit 15), so that
            nothing is stored that you did not see whole: a paste of more than one line, a
            line of 4095 characters or more (the terminal may have cut it), a terminal that
            cannot hide typing. Put such values in a file or pipe them. Ctrl-D stores nothing.
An empty value, or one that is only whitespace, is refused (exit 10).
The namespace is checked before the value is asked for."""

DESCRIPTIONS = {
    "create": "Store a new secret. A key may not share its Secret name (lower-case, '_' -> '-') or\n"
    "its env var name (SESAME_SECRET_ + upper-case, other characters -> '_') with a stored key:\n"
    "my.secret and my_secret cannot coexist (exit 7, naming the stored key).\n\n" + VALUES,
    "get": "List secrets, or show one: names, source (value or file) and dates. Never the value.\n"
    "Only Secrets labelled app.kubernetes.io/managed-by=sesame are shown.",
    "update": "Replace the value of an existing secret.\n\n" + VALUES,
    "delete": "Delete a secret.",
}


def build_parser() -> argparse.ArgumentParser:
    prog = _prog()
    common = _common_options()
    formatter = argparse.RawDescriptionHelpFormatter
    top = Parser(
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
    from sesame.cli import run as run_command  # `sesame run` (issue 13): its own module

    run_command.add_parser(verbs, common, prog)
    return top


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from sesame.entrypoint import DISTRIBUTION

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


# -- namespace ----------------------------------------------------------------------------------


def resolve_target(args: argparse.Namespace) -> Target:
    from sesame.cli.store import Target

    namespace = getattr(args, "namespace", None)
    if namespace:
        derived = [flag for flag in ("project", "domain", "namespace_template") if hasattr(args, flag)]
        if derived:
            flags = " and ".join(f"--{flag.replace('_', '-')}" for flag in derived)
            raise CliError(
                ExitCode.USAGE,
                f"--namespace {namespace} conflicts with {flags}: give either --namespace, "
                "or --project and --domain",
            )
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
        partial = os.environ.get(naming.NAMESPACE_TEMPLATE_PARTIAL_ENV) == "1"
        namespace = naming.namespace_for(project, domain, template, allow_partial=partial)
    except naming.NamingError as error:
        raise CliError(ExitCode.USAGE, str(error)) from None
    origin = f"from --project {project} --domain {domain} with template {template}"
    if template_origin != "default":
        origin += f" from {template_origin}"
    return Target(namespace, origin)


# -- values -------------------------------------------------------------------------------------


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
    if args.verb == "run":
        from sesame.cli import run as run_command

        return run_command.main(args)
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
    except ModuleNotFoundError:
        raise  # the entry point says which extra to install
    except Exception as error:  # a bug or an unexpected library failure: still one line, no value
        typed = values.value if values is not None else None
        detail = scrub(str(error).splitlines()[0] if str(error) else "", typed)
        print(f"error: unexpected {type(error).__name__}: {detail}", file=sys.stderr)
        return int(ExitCode.ERROR)
