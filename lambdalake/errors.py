"""Errors a user can act on: the CLI prints their message as one line and exits non-zero."""


class LambdalakeError(Exception):
    """A failure with a message that says what is wrong and what to do; never shown as a traceback."""
