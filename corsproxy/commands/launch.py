"""The `corsproxy` console script and `python -m corsproxy`: the SIGHUP of a starting
`serve` remembered (ops/early_hup.py) before the command line's slow imports."""

from __future__ import annotations

import sys

from corsproxy.ops.early_hup import install_for


def main() -> None:
    install_for(sys.argv[1:])
    from corsproxy.commands.cli import main as cli_main

    cli_main()
