"""Errors the command line turns into one-line messages and exit code 2."""


class KfoldClrError(Exception):
    """Base class of the errors raised on bad user input (config, data, arguments).

    The message is one line that names the key path or file, the value received
    and what is allowed. The command line prints it without a traceback and exits 2.
    """

    exit_code = 2


class ConfigError(KfoldClrError, ValueError):
    """The experiment configuration (YAML or dict) is invalid."""


class DataError(KfoldClrError, ValueError):
    """The data set cannot be loaded or is unfit for the requested task."""


class ResultsError(KfoldClrError):
    """A results directory is missing, damaged, locked or from another config."""


def describe_error(error: BaseException) -> str:
    """`ClassName: first line of the message`: how a failed fold or a stopped tracker names its error."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{error.__class__.__name__}: {text}"
