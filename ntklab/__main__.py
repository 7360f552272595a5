"""The `ntklab` command (also `python -m ntklab`). This module stays light: `--help` is answered
from the schema's source alone, and the heavy modules are imported inside main, where a signal
during their import is only noted, then answered."""

from __future__ import annotations

import logging
import signal
import sys

HELP_FLAGS = ("--help", "-h")


def main() -> None:
    """The `ntklab` command: `--help` prints the help page (no torch, no Hydra); an output folder
    that cannot be written and a signal while starting are answered in one line; then Hydra
    composes the config and ntklab.cli runs it.

    While the heavy modules are imported a signal is only noted (an exception inside an import
    can leave a library half-initialised); it is answered once they are in."""
    if any(a in HELP_FLAGS for a in sys.argv[1:]):
        from ntklab.help import page

        sys.stdout.write(page())
        return
    # From here on a signal is only noted, until the heavy modules are in.
    pending: list[int] = []
    note = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: pending.append(signum))
    from ntklab.launch import Interrupted, check_output_folder, console, stopped, warnings_to_log

    warnings_to_log()
    if not any(a in sys.argv for a in ("--hydra-help", "--cfg", "-c")):
        problem = check_output_folder(sys.argv[1:])
        if problem:
            console(f"error: {problem}", logging.ERROR)
            sys.exit(2)
    from ntklab.cli import hydra_main  # torch and the rest

    signal.signal(signal.SIGINT, note)
    if pending:
        stopped(signal.Signals(pending[0]))
        sys.exit(128 + pending[0])
    with Interrupted.catch():
        hydra_main()


if __name__ == "__main__":
    main()
