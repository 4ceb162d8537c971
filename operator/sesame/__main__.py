"""`python -m sesame …` is the `sesame` command."""

import sys

from sesame.entrypoint import main

sys.exit(main())
