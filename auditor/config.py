"""Settings: command-line flags over environment variables over a config file.

The config file is ``auditor.toml`` in the working folder, or the file named by ``--config``. It may
hold any of the keys below under a ``[auditor]`` table (or at top level)::

    [auditor]
    url = "https://bigid.example.net"
    db = "auditor.db"
    token_file = "~/.config/auditor/token"   # the API key itself never goes in this file
    auth_scheme = "auto"
    workers = 4
    max_failed_clusters = 10               # clusters that may fail before a snapshot stops
    max_minutes = 90                       # a snapshot not finished by then stops (default: no limit)
    skip_clusters = ["65b2…"]              # clusters left out of every snapshot (default: none)
    ca_bundle = "/etc/ssl/private-ca.pem"

    [auditor.sandbox]      # the built-in sandbox `auditor run` uses when no url is set
    seed = 7
    clusters = 150
    columns = 15000

Relative paths (see :data:`PATH_SETTINGS`) are relative to the config file's folder.

The API key is read from ``BIGID_TOKEN``, from ``--token-file``/``token_file``, or from a prompt; it is
never accepted as a plain command-line value (it would show in ``ps``), and never written anywhere.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.bigid.auth import SCHEMES
from auditor.errors import ConfigError

CONFIG_FILE = "auditor.toml"
DEMO_FOLDER = "auditor-demo"  # where auditor demo writes, by default
ENV_URL = "BIGID_URL"
ENV_TOKEN = "BIGID_TOKEN"  # noqa: S105 - the name of the variable, not a secret
ENV_DB = "AUDITOR_DB"
ENV_SMTP = "AUDITOR_SMTP"
ENV_EMAIL_FROM = "AUDITOR_EMAIL_FROM"
SEVERITIES = ("info", "low", "medium", "high", "critical")

KNOWN_KEYS = {
    "url",
    "db",
    "token_file",
    "auth_scheme",
    "cluster_id_param",
    "workers",
    "processes",
    "max_failed_clusters",
    "max_minutes",
    "skip_clusters",
    "ca_bundle",
    "insecure",
    "connect_timeout",
    "read_timeout",
    "max_answer_mib",
    "page_size",
    "rules",
    "waivers",
    "fail_on",
    "smtp",
    "smtp_ca_bundle",
    "email_to",
    "email_from",
    "templates",
    "sandbox",
}


@dataclass
class FileSettings:
    """What the config file says (empty when there is none)."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def working_folder() -> Path:
    """The current folder, or a usage error when it no longer exists (removed while a shell was
    in it): relative paths would name nothing, and Python's own error says no more than ENOENT."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise ConfigError(
            "the current folder no longer exists (it was removed or renamed after the shell went into it)",
            hint="cd to an existing folder and run the command again",
        ) from None


def load_config(path: str | os.PathLike[str] | None, *, explicit: bool) -> FileSettings:
    """Read ``path`` (or ``./auditor.toml``).

    A missing default file is fine; a missing ``--config`` file is an error.
    """
    candidate = Path(path) if path else working_folder() / CONFIG_FILE
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"--config: {candidate} does not exist")
        return FileSettings()
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{candidate}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{candidate}: invalid TOML: {exc}") from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise ConfigError(
            f"{candidate}: invalid TOML: a number with more digits than a setting can hold"
        ) from None
    values = data.get("auditor", data)
    if not isinstance(values, dict):
        raise ConfigError(f"{candidate}: [auditor] must be a table")
    above = sorted(key for key in data if key != "auditor") if "auditor" in data else []
    # TOML: keys before the first [table] header are top-level; with an [auditor] table (one made
    # by [auditor.sandbox] too) they were silently not read, a fail_on among them too. Listed with
    # the table's own problems (a new user's walkthrough: this one alone hid five others).
    problems: list[tuple[str, str, str | None]] = [
        (
            f"{OUTSIDE}{key}",
            f"[{key}] is a table outside [auditor], where nothing is read",
            "settings go under [auditor] and [auditor.sandbox]",
        )
        if isinstance(data[key], dict)
        else (
            f"{OUTSIDE}{key}",
            f"setting {key} sits outside the [auditor] table, where it is not read",
            "move it under [auditor]: a key before the first [table] header is outside every table",
        )
        for key in above
    ]
    problems += _problems(values, prefix="auditor." if "auditor" in data else "")
    if isinstance(values.get("sandbox"), dict):
        problems += _sandbox_problems(values["sandbox"])
    elif "sandbox" in values:
        problems.append(("sandbox", f"[auditor.sandbox] must be a table, not {values['sandbox']!r}", None))
    if problems:
        raise _settings_error(candidate, problems)
    return FileSettings(path=candidate, values=_paths_from(candidate.parent, values))


def _problems(values: dict[str, Any], *, prefix: str) -> list[tuple[str, str, str | None]]:
    """Every problem of the [auditor] table's settings, as (setting, text, hint): all at once, not
    the first only (found by a new-user probe: five mistakes were reported one run at a time)."""
    problems: list[tuple[str, str, str | None]] = []
    for key in ("token", "api_key"):  # the reason matters more than the key being unknown
        if key in values:
            hint = "put it in a file of its own and name it with token_file, or set BIGID_TOKEN"
            problems.append((key, "the API key does not belong in the config file", hint))
    for key in sorted(set(values) - KNOWN_KEYS - {"token", "api_key"}):
        if isinstance(values[key], dict):
            hint = f"settings go under [auditor] and [auditor.sandbox], not [{prefix}{key}]"
            problems.append((key, f"unknown setting {key}", hint))
        else:
            meant = difflib.get_close_matches(key, sorted(KNOWN_KEYS), n=1)
            problems.append(
                (key, f"unknown setting {key}" + (f" (did you mean {meant[0]}?)" if meant else ""), None)
            )
    for key, value in values.items():
        kind = KINDS.get(key)
        if kind is not None and not _is_kind(value, kind):
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            problems.append((key, f"setting {key} must be {kind}, not {shown}", None))
        elif key in RANGES and not _in_range(value, *RANGES[key]):
            allowed = _describe_range(*RANGES[key])
            problems.append((key, f"setting {key} must be {allowed}, not {value!r}", None))
        elif key in CHOICES and value not in CHOICES[key]:
            choices = ", ".join(CHOICES[key])
            problems.append((key, f"setting {key} must be one of {choices}, not {value!r}", None))
    for key in PATH_SETTINGS:
        given = values.get(key)
        if given == "" or (isinstance(given, list) and "" in given):
            # read as "not set", the default ./auditor.db was created by commands that only read
            hint = "name the file or folder it is for, or leave the setting out"
            problems.append((key, f"setting {key} is empty", hint))
    return problems


def _settings_error(source: Path, problems: list[tuple[str, str, str | None]]) -> ConfigError:
    """One error for every problem, each at the line of its setting in the [auditor] table."""
    try:
        written = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        written = ""
    lines = _setting_lines(written)
    lines.update({f"sandbox.{key}": line for key, line in _setting_lines(written, "auditor.sandbox").items()})
    lines.update({f"{OUTSIDE}{key}": line for key, line in _outside_lines(written).items()})
    problems = sorted(problems, key=lambda problem: lines.get(problem[0], 0))  # stable: in file order
    where = {key: f"{source}:{lines[key]}" if key in lines else str(source) for key, _, _ in problems}
    unknown = any(
        text.startswith("unknown setting") and not key.startswith("sandbox.") for key, text, _ in problems
    )
    known = f"known settings: {', '.join(sorted(KNOWN_KEYS))}" if unknown else None
    if len(problems) == 1:
        key, text, hint = problems[0]
        return ConfigError(f"{where[key]}: {text}", hint="; ".join(filter(None, (hint, known))) or None)
    located = [f"{where[key]}: {text}" + (f" ({hint})" if hint else "") for key, text, hint in problems]
    return ConfigError(f"{source}: {len(problems)} problems in the settings", hint=known, problems=located)


OUTSIDE = "^"  # the prefix of a problem's key for a setting outside the [auditor] table


def _outside_lines(text: str) -> dict[str, int]:
    """The line of each top-level key (before the first table header) and of each table header
    that is not [auditor] or below it."""
    lines: dict[str, int] = {}
    in_top = True
    for number, line in enumerate(text.splitlines(), 1):
        # a header alone on its line ('["a"],' in a multi-line array is none)
        header = re.match(r"\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$", line)
        if header:
            in_top = False
            name = header.group(1).split(".")[0].strip("\"' ")
            if name != "auditor":
                lines.setdefault(name, number)
            continue
        # a key, or the first part of a dotted one ('a.b = 2' is the table a)
        found = re.match(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*[=.]""", line)
        if found and in_top:
            lines.setdefault(next(g for g in found.groups() if g is not None), number)
    return lines


def _setting_lines(text: str, wanted: str = "auditor") -> dict[str, int]:
    """The line of each key of the ``wanted`` table (for [auditor]: of the top level, in a file
    without one, and of the header of each table below it)."""
    lines: dict[str, int] = {}
    has_table = re.search(rf"^\s*\[\s*{re.escape(wanted)}\s*\]", text, re.MULTILINE) is not None
    table = None if has_table or wanted != "auditor" else ""
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[+\s*([^\]]*?)\s*\]", line)
        if header:
            name = header.group(1)
            table = "" if name == wanted else None
            if wanted != "auditor":
                continue
            if name.startswith("auditor.") or not has_table:  # [auditor.sandbox], or a misplaced table
                lines.setdefault(name.removeprefix("auditor.").split(".")[0], number)
            continue
        found = re.match(r"""\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*=""", line)
        if found and table == "":
            lines.setdefault(next(g for g in found.groups() if g is not None), number)
    return lines


PATH_SETTINGS = ("db", "token_file", "ca_bundle", "waivers", "smtp_ca_bundle", "templates", "rules")
"""Settings naming files or folders: relative ones are relative to the config file's folder."""


def _paths_from(folder: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the relative paths of :data:`PATH_SETTINGS` made relative to ``folder`` (the
    config file's), as a file read with ``--config elsewhere/auditor.toml`` means them: they used
    to be taken from the working folder. ``~/…`` is the user's home folder, for every path setting
    (``rules`` and ``waivers`` were read literally); a database URL (``sqlite:///x.db``) and
    absolute paths are left as they are."""
    values = dict(values)
    for key in PATH_SETTINGS:
        if key in values:
            given = values[key]
            values[key] = [_home(v) for v in given] if isinstance(given, list) else _home(given)
    try:
        here = folder.resolve() == Path.cwd().resolve()
    except OSError:  # the working folder was removed under us: the file's folder is elsewhere
        here = False
    if here:
        return values  # the same place: the values stay as written (and as messages show them)

    def moved(value: Any) -> Any:
        if not isinstance(value, str) or not value or value.startswith("~") or "://" in value:
            return value
        if value == ":memory:" or Path(value).is_absolute():
            return value
        return os.path.join(folder, value)

    out = dict(values)
    for key in PATH_SETTINGS:
        if key in out:
            out[key] = [moved(v) for v in out[key]] if isinstance(out[key], list) else moved(out[key])
    return out


def _home(value: Any) -> Any:
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


SANDBOX_KEYS = ("seed", "clusters", "columns")


def _sandbox_problems(table: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The problems of ``[auditor.sandbox]`` (the built-in sandbox ``auditor run`` uses without a
    URL), checked on load like every other setting: a typo used to pass every command but ``run``,
    which then failed without saying where the setting was. Each is located as ``sandbox.KEY``."""
    problems: list[tuple[str, str, str | None]] = []
    takes = f"[auditor.sandbox] takes {', '.join(SANDBOX_KEYS)} (whole numbers)"
    for key in sorted(set(table) - set(SANDBOX_KEYS)):
        meant = difflib.get_close_matches(key, SANDBOX_KEYS, n=1)
        if meant:
            problems.append(
                (
                    f"sandbox.{key}",
                    f"unknown setting {key} in [auditor.sandbox] (did you mean {meant[0]}?)",
                    None,
                )
            )
        else:
            problems.append((f"sandbox.{key}", f"unknown setting {key} in [auditor.sandbox]", takes))
    for key, value in table.items():
        if key in SANDBOX_KEYS and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(
                (f"sandbox.{key}", f"[auditor.sandbox] {key} must be a whole number, not {value!r}", None)
            )
    if problems:  # the sandbox's own checks compare settings: a misspelt one would read as its default
        return problems
    from auditor.sandbox.config import SandboxConfig

    try:
        SandboxConfig(**table)
    except ConfigError as exc:
        said = exc.message.removeprefix("sandbox: ")
        key = next((k for k in table if said.startswith(f"{k} ")), "")
        problems.append((f"sandbox.{key}", f"[auditor.sandbox] {said}", None))
    return problems


# The bounds of numeric settings, in the file and on the command line alike (cli.common.setting_type):
# (lowest, highest, open below).
# Upper bounds too: a value past what the clock or an integer holds (1e308 seconds) passed the check
# and then failed deep inside as an internal error (found by a configuration probe).
RANGES: dict[str, tuple[float, float | None, bool]] = {
    "workers": (1, 64, False),
    "processes": (0, 64, False),
    "page_size": (1, 1_000_000, False),
    "max_failed_clusters": (0, None, False),
    "connect_timeout": (0, 3_600, True),  # an hour
    "read_timeout": (0, 86_400, True),  # a day
    "max_answer_mib": (0, 1_048_576, True),  # a TiB
    "max_minutes": (0, 527_040, True),  # a year
}
# the similar-columns endpoint's cluster id parameter: the tutorial's, or the spelling some deployments read
CLUSTER_ID_PARAMS = ("clusterId", "cluster_id")
CHOICES = {
    "auth_scheme": SCHEMES,
    "cluster_id_param": CLUSTER_ID_PARAMS,
    "fail_on": (*SEVERITIES, "none"),
}  # none: no gate, as --fail-on none


def _in_range(value: float, low: float, high: float | None, open_below: bool) -> bool:
    above = value > low if open_below else value >= low
    return above and (high is None or value <= high) and math.isfinite(value)  # no NaN, no inf


def _describe_range(low: float, high: float | None, open_below: bool) -> str:
    if high is None:
        return f"above {low:g}" if open_below else f"{low:g} or more"
    most = f"{int(high):,}" if float(high).is_integer() else f"{high:g}"
    return f"above {low:g} and at most {most}" if open_below else f"from {low:g} to {most}"


TEXT, BOOLEAN, WHOLE, NUMBER, TEXTS = (
    "text (quoted)",
    "true or false (unquoted)",
    "a whole number",
    "a number",
    "text or a list of text",
)
KINDS = {
    "url": TEXT,
    "db": TEXT,
    "token_file": TEXT,
    "auth_scheme": TEXT,
    "cluster_id_param": TEXT,
    "ca_bundle": TEXT,
    "waivers": TEXT,
    "fail_on": TEXT,
    "smtp": TEXT,
    "smtp_ca_bundle": TEXT,
    "email_from": TEXT,
    "templates": TEXT,
    "insecure": BOOLEAN,
    "workers": WHOLE,
    "processes": WHOLE,
    "max_failed_clusters": WHOLE,
    "page_size": WHOLE,
    "connect_timeout": NUMBER,
    "read_timeout": NUMBER,
    "max_answer_mib": NUMBER,
    "max_minutes": NUMBER,
    "rules": TEXTS,
    "email_to": TEXTS,
    "skip_clusters": TEXTS,
}
"""What each setting's TOML value must be: ``insecure = "false"`` must not switch TLS checks off."""


def _is_kind(value: Any, kind: str) -> bool:
    if kind == BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):  # TOML true/false is never a number or text here
        return False
    if kind == WHOLE:
        return isinstance(value, int)
    if kind == NUMBER:
        return isinstance(value, int | float)
    if kind == TEXTS:
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return isinstance(value, str)


def pick(flag: Any, env_name: str | None, file_settings: FileSettings, key: str, default: Any = None) -> Any:
    """Flags over environment over config file over default."""
    if flag is not None:
        return flag
    if env_name and os.environ.get(env_name):
        return os.environ[env_name]
    return file_settings.get(key, default)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The API key from a file (first line, surrounding white space removed)."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--token-file / token_file: cannot read {file} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # never quoted: the bytes around it are the key
        raise ConfigError(
            f"--token-file / token_file: {file} is not UTF-8 text (byte {exc.start})",
            hint="put the API key in it, on one line of ASCII characters",
        ) from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ConfigError(
            f"--token-file / token_file: {file} is empty", hint="put the API key in it, on one line"
        )
    return token
