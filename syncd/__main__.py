"""`python -m syncd`: the `syncd` command, where no console script is installed."""

from syncd.cli import main

main()
