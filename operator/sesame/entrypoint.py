"""The `sesame` console script: `sesame operator run …` starts the operator, anything else is the CLI.

This dispatcher is the only place both adapters meet, and it imports each lazily, so the CLI never
loads Kopf and the operator never loads the CLI.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["operator"]:
        from sesame.operator_command import main as operator_main

        return operator_main(args[1:])
    from sesame.cli.main import main as cli_main

    return int(cli_main(args))


if __name__ == "__main__":
    sys.exit(main())
