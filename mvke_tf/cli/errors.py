"""The command line's errors: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``mvke-tf: error:`` line (exit 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message} (see {self.prog} --help)")
