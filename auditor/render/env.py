"""The one Jinja2 environment every report and email template renders through.

Templates are shipped data in the top-level ``reports/`` folder (found through
:func:`auditor.paths.reports_dir`); a user folder given with ``--templates DIR`` is searched first, so
any template (or the inline stylesheet and script) can be overridden one file at a time. Autoescape is
on for everything except plain-text, CSS and JavaScript templates; ``StrictUndefined`` turns a typo in a
template into an error instead of an empty cell; every filter is registered here.

:func:`inline_assets` renders the stylesheet and the script that the HTML report embeds and computes
the Content-Security-Policy that allows exactly those two blocks (by SHA-256) and nothing else, so
that even an escaping bug could not run a script injected through catalog data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from auditor.errors import ConfigError
from auditor.paths import reports_dir
from auditor.render.context import SEVERITIES, display_value, severity_rank
from auditor.textsafe import counted, one_line


def make_environment(templates_dir: str | Path | None = None) -> jinja2.Environment:
    """The environment: ``templates_dir`` (if given) searched before the bundled ``reports/``."""
    search: list[str] = []
    if templates_dir is not None:
        folder = Path(templates_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"--templates: {folder} is not a folder",
                hint="pass a folder holding templates named like those in reports/ (e.g. report.html.j2)",
            )
        search.append(str(folder))
    search.append(str(reports_dir()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        # Everything is escaped except plain-text (``.txt``), CSS and JavaScript templates (which
        # take no catalog data); an unknown suffix and a template built from a string are escaped too.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "htm", "xml", "svg", "j2"),
            disabled_extensions=("txt", "css", "js"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        finalize=_shown,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    env.globals["SEVERITIES"] = SEVERITIES
    return env


def _shown(value: Any) -> Any:
    """Every ``{{ value }}``, before escaping: control and invisible characters in plain text (catalog
    data), line breaks and tabs included, show as escapes (:func:`auditor.textsafe.one_line`), so
    that a bidi override cannot reorder what a reviewer reads in the report or an email, nor a line
    break in a name forge a line of the plain-text email or pass for a space. Text the team wrote
    over several lines (a rule's description, a waiver's reason) goes through :func:`prose` first.
    Markup built by filters is left as it is."""
    return one_line(value) if type(value) is str else value


EDGE_SPACE = Markup('<span class="sp" title="a space">\u2420</span>')


def catalog_name(value: Any) -> Any:
    """A catalog name (cluster id, column) as :func:`_shown` shows it, with its leading and
    trailing spaces visible (``␠first name␠``): HTML collapses and hides them, so that
    ``first name``, ``first name `` and `` first name`` read alike (the stylesheet keeps the runs
    of spaces inside a name). The text is unchanged in the exports."""
    if type(value) is not str:
        return value
    lead, core, trail = _edge_spaces(value)
    if not (lead or trail):
        return core
    return EDGE_SPACE * lead + Markup.escape(core) + EDGE_SPACE * trail


def _edge_spaces(value: str) -> tuple[int, str, int]:
    """A name as shown (:func:`one_line`, its own ␠ escaped so that it never reads as a space):
    its leading spaces, what is between, its trailing spaces."""
    text = one_line(value).replace("\u2420", "\\u2420")
    core = text.strip(" ")
    lead = len(text) - len(text.lstrip(" "))
    return lead, core, len(text) - lead - len(core)


def catalog_name_text(value: Any) -> Any:
    """:func:`catalog_name` for plain text (the email's text part): edge spaces as ``␠``, which a
    mail client or a relay would otherwise trim or hide."""
    if type(value) is not str:
        return value
    lead, core, trail = _edge_spaces(value)
    return "\u2420" * lead + core + "\u2420" * trail


def prose(value: Any) -> str:
    """Text a person wrote, possibly folded over lines in YAML: whitespace runs as one space."""
    return "" if value is None else " ".join(str(value).split())


# --------------------------------------------------------------------------------------------------
# Filters (the only place they are defined)
# --------------------------------------------------------------------------------------------------


def number(value: Any) -> str:
    """``12345`` → ``12,345``; ``None`` → ``—``."""
    if value is None:
        return "—"
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


def when(value: Any) -> str:
    """An ISO timestamp as ``2026-11-28 22:16:10 UTC``."""
    if not value:
        return "—"
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if parsed.tzinfo is not None:  # a time with another offset is shown as the UTC time it is
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC")


def plural(count: int, word: str, many: str | None = None) -> str:
    """``plural(1, "finding")`` → ``1 finding``; ``plural(3, "finding")`` → ``3 findings``."""
    if count is None:  # (as number() shows it)
        return f"{number(count)} {many or word + 's'}"
    return counted(int(count), word, many)


def fixed(value: float, digits: int = 1) -> str:
    """A coordinate for SVG attributes: short, locale-free."""
    return f"{float(value):.{digits}f}"


def severity_order(severity: str) -> int:
    """A sort key that puts ``critical`` highest: 5 for critical down to 1 for info, 0 for unknown."""
    return len(SEVERITIES) - severity_rank(severity)


FILTERS: dict[str, Any] = {
    "severity_order": severity_order,
    "number": number,
    "when": when,
    "plural": plural,
    "fixed": fixed,
    "value": display_value,
    "prose": prose,
    "name": catalog_name,
    "name_text": catalog_name_text,
}


# --------------------------------------------------------------------------------------------------
# Inline assets and the Content-Security-Policy
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InlineAssets:
    """The report's inline stylesheet and script (trusted template output) and the CSP allowing them."""

    css: Markup
    js: Markup
    csp: str


def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


@contextlib.contextmanager
def template_errors(kind: str) -> Iterator[None]:
    """Rendering ``kind`` ("report", "email") templates: a template that does not parse or render is
    a usage error (exit 2) naming the file and line (see :func:`template_error`)."""
    try:
        yield
    except (jinja2.TemplateError, RecursionError) as exc:
        raise template_error(exc, kind) from None


def template_error(exc: jinja2.TemplateError | RecursionError, kind: str) -> ConfigError:
    """The usage error (exit 2) for a template that does not parse or render, naming the file and line
    (``report template error in t/report.html.j2:3: UndefinedError: 'nothing' is undefined``)."""
    if isinstance(exc, RecursionError):  # {% extends "report.html.j2" %} in report.html.j2 itself
        return ConfigError(
            f"{kind} template error: a template extends, includes or imports itself (a template in the "
            "--templates folder replaces the bundled one of its name, which it can then no longer reach)",
            hint="copy the bundled template into the folder and edit the copy "
            "(docs/report.md, Your own templates)",
        )
    where = ""
    if isinstance(exc, jinja2.TemplateSyntaxError) and (exc.filename or exc.name):
        where = f" in {exc.filename or exc.name}:{exc.lineno}"
    else:  # a render error: Jinja2 rewrites the traceback so that template frames carry file and line
        tb = exc.__traceback__
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if name.endswith((".j2", ".css", ".js", ".txt")):
                where = f" in {name}:{tb.tb_lineno}"
            tb = tb.tb_next
    return ConfigError(
        f"{kind} template error{where}: {type(exc).__name__}: {exc}",
        hint=f"check the templates in the --templates folder against the bundled ones in {reports_dir()}",
    )


def inline_assets(
    env: jinja2.Environment,
    css: str = "report.css",
    js: str = "report.js",
    *,
    run_id: int | None = None,
    against_id: int | None = None,
    run_status: str | None = None,
) -> InlineAssets:
    """Render the stylesheet and script templates and build a CSP that allows exactly them.

    They are rendered without catalog data: the stylesheet gets only the run ids (integers) and, for
    a run that is not complete, the words saying so, for the printed pages' footer (``page_label``:
    a loose page of a failed run's report must not read as a complete one's). The result is wrapped
    as ``Markup`` here (the templates never use ``|safe``). A closing ``</style>``/``</script>``
    inside them would end the block early, so it is refused.
    """
    label = "cluster-auditor report"
    if run_id is not None:
        label += f", run {int(run_id)}" + (
            f" against run {int(against_id)}" if against_id is not None else ""
        )
        if run_status is not None and run_status != "complete":
            word = run_status if run_status.isascii() and run_status.isalpha() else "incomplete"  # CSS text
            label += f" (run {int(run_id)} {word}, not complete)"
    with template_errors("report"):
        css_text = env.get_template(css).render(page_label=label)
        js_text = env.get_template(js).render()
    for name, text, closing in ((css, css_text, "</style"), (js, js_text, "</script")):
        if closing in text.lower():
            raise ConfigError(f"template {name} contains {closing}>, which would end its inline block early")
    csp = "; ".join(
        (
            "default-src 'none'",
            f"style-src {_sha256_source(css_text)}",
            f"script-src {_sha256_source(js_text)}",
            "img-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    return InlineAssets(css=Markup(css_text), js=Markup(js_text), csp=csp)  # noqa: S704 - our own template output
