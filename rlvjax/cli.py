"""What the command-line entry points share: user errors end as one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, UnicodeDecodeError)


def run_main(name: str, main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """Wrap an absl ``main``: bad input (a config, a path, a value) prints ``name: error: ...`` and exits 2."""

    def wrapped(argv):
        try:
            main(argv)
        except USER_ERRORS as e:
            message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
            print(f"{name}: error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapped
