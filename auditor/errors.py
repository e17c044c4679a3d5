"""The one exception hierarchy of cluster-auditor.

Every error a user can meet is an :class:`AuditorError` carrying the one line the user sees, an
optional hint saying what to do about it, and the process exit code it maps to. The CLI translates
them in one place (``auditor.cli.main``); library callers catch them like any exception. Messages
never contain credentials: the client scrubs them before raising.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_USAGE = 2
EXIT_FAILURE = 3


EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # SIGTERM (128 + SIGTERM): docker stop, systemd, a cancelled CI job
EXIT_PIPE_CLOSED = 141  # the reader of stdout went away (128 + SIGPIPE, as `yes | head` gives)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds like Ctrl-C: a snapshot cut short is
    marked failed, worker processes are shut down, and no output file is left half-written."""


class AuditorError(Exception):
    """Base class: ``message`` is one line for the user, ``hint`` an optional next step."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ProblemsError(AuditorError):
    """An error over a file that can hold many problems: ``problems`` lists each, already formatted
    as ``file:line[:col]: text`` (exit 2). ``str()`` shows them too, for a caller from Python (a
    traceback said "1 problem in the rule files" and no more); the CLI prints ``message`` and each
    problem on its own line."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  {problem}" for problem in self.problems)])


class ConfigError(ProblemsError):
    """Bad settings, options or configuration file (exit 2); ``problems``, when a settings file holds
    several, lists each as ``file:line: text``."""


class RuleError(ProblemsError):
    """A rule file, waiver file or rule fixture is invalid (exit 2); ``problems`` lists every problem
    found, each as ``file:line:col: text``."""


class ApiError(AuditorError):
    """The BigID API answered with an error or an unusable payload (exit 3)."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


class AuthError(ApiError):
    """401/403: the API key is missing, invalid, expired or lacks permission (exit 3)."""


class NotFoundError(ApiError):
    """404: a cluster (or route) does not exist (exit 3)."""


class NetworkError(ApiError):
    """Connection failures and timeouts that outlasted the retry budget (exit 3)."""


class PayloadError(ApiError):
    """A payload that does not fit the models: names the cluster, the field and the problem (exit 3)."""


class PartialSnapshotError(ApiError):
    """A snapshot ended with clusters that could not be fetched: its run is ``failed`` (exit 3).

    The other clusters were stored; ``problems`` lists the failed clusters (``cluster: error``),
    ``failed`` holds every (cluster id, error) pair and ``tripped`` says whether the snapshot
    stopped early because too many clusters failed (``max_failed_clusters``).
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        run_id: int,
        failed: list[tuple[str, str]],
        problems: list[str] | None = None,
        tripped: bool = False,
    ) -> None:
        super().__init__(message, hint)
        self.run_id = run_id
        self.failed = list(failed)
        self.problems = list(problems or [])
        self.tripped = tripped


class StoreError(AuditorError):
    """The database could not be opened, migrated, read or written (exit 3)."""

    exit_code = EXIT_FAILURE


class RunNotUsableError(StoreError):
    """The requested run does not exist or is not ``complete`` (exit 3)."""


class DeliveryError(AuditorError):
    """Writing a report or sending an email failed (exit 3).

    ``refused`` holds the recipients the server refused when it took the message for the others
    (send again to those only); ``too_large`` says the server refused the message for its size.
    """

    exit_code = EXIT_FAILURE
    refused: tuple[str, ...] = ()
    too_large: bool = False
