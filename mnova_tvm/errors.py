"""The one error type users see: a message that says what is wrong and what to do."""


class MnovaError(Exception):
    """A user-facing error. The CLI prints it on one line and exits with code 2, no traceback."""
