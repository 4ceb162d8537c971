"""The `sesame` console script: `sesame operator run …` starts the operator, anything else is the CLI.

This dispatcher is the only place both adapters meet, and it imports each lazily, so the CLI never
loads Kopf and the operator never loads the CLI. The bare package is the stdlib-only SDK; each
adapter needs a pip extra, and a missing one is named here in one line instead of a traceback.
"""

from __future__ import annotations

import sys

# The name on the package index (`sesame` there is an unrelated project); the import name is `sesame`.
DISTRIBUTION = "sesame-secrets"
# The top-level modules each extra brings (see pyproject.toml); a missing one means "install the extra".
EXTRA_MODULES = {
    "cli": frozenset({"kubernetes", "yaml", "urllib3"}),
    "operator": frozenset({"kopf", "kubernetes", "yaml", "urllib3", "prometheus_client", "cryptography"}),
}
NOT_INSTALLED = 16  # sesame.cli.errors.ExitCode.NOT_INSTALLED, without loading the CLI here


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    extra = "operator" if args[:1] == ["operator"] else "cli"
    command = " ".join(["sesame", *[arg for arg in args[:2] if not arg.startswith("-")]])
    try:
        if extra == "operator":
            from sesame.operator_command import main as operator_main

            return operator_main(args[1:])
        from sesame.cli.main import main as cli_main

        return int(cli_main(args))
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in EXTRA_MODULES[extra]:
            print(f"error: unexpected ModuleNotFoundError: {error}", file=sys.stderr)
            return 1
        print(
            f"error: `{command}` needs the '{extra}' extra, which is not installed (no module named "
            f"{missing!r}): pip install '{DISTRIBUTION}[{extra}]'",
            file=sys.stderr,
        )
        return NOT_INSTALLED


if __name__ == "__main__":
    sys.exit(main())
