"""The one error type users see: a message that says what is wrong and what to do."""


class MnovaError(Exception):
    """A user-facing error. The CLI prints it on one line and exits with code 2, no traceback."""


class ProfilingInterrupted(MnovaError):
    """A device died while being profiled; what was timed is kept, so a rerun resumes after it."""


def last_line(err: BaseException) -> str:
    """The line of a (TVM) exception that says what went wrong: its last, or its type name."""
    text = str(err).strip()
    return text.splitlines()[-1].strip() if text else type(err).__name__
