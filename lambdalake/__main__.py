"""`python -m lambdalake` is the `lambdalake` command."""

from lambdalake.cli import main

main()
