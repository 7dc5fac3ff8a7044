"""The one error type users see: a message that says what is wrong and what to do."""


class MnovaError(Exception):
    """A user-facing error. The CLI prints it on one line and exits with code 2, no traceback."""


class StaleDataset(MnovaError):
    """A profiling dataset whose feature columns an older mnova-tvm computed (mnova refeature)."""


class ProfilingInterrupted(MnovaError):
    """A device died while being profiled; what was timed is kept, so a rerun resumes after it."""


def last_line(err: BaseException) -> str:
    """The line of a (TVM) exception that says what went wrong: its last, or its type name."""
    text = str(err).strip()
    return text.splitlines()[-1].strip() if text else type(err).__name__


# Ctrl-C or `kill` raises KeyboardInterrupt wherever Python runs next, which during tvm.compile
# can be a Python callback whose error some C++ caller drops: the compile went on and the
# signal was lost. The signal handler (cli.py) also records it here, and the steps that run
# C++ for long (compile.build) check it when they return.
_interrupt_requested = False


def request_interrupt() -> None:
    """Record a Ctrl-C or `kill` and raise KeyboardInterrupt where Python is now."""
    global _interrupt_requested
    _interrupt_requested = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a C++ caller may have dropped since the last request."""
    if _interrupt_requested:
        raise KeyboardInterrupt


def clear_interrupt() -> None:
    global _interrupt_requested
    _interrupt_requested = False
