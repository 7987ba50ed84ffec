"""`python -m edgekit` is the same as the `edgekit` console script."""

from edgekit.cli import main

main()
