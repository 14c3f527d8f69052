"""The one exception type a user can cause, and the one warning; the CLI prints each as a single line, never a
traceback."""


class MmgbmError(Exception):
    """A problem with the user's input, config or files, phrased as what is wrong and how to fix it."""


class MmgbmWarning(UserWarning):
    """A problem with the user's data that a run read on past, as the config asked (broken records skipped); the
    CLI prints it as one note line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none): what a one-line error quotes of a cause."""
    return str(exc).splitlines()[0] if str(exc) else ""
