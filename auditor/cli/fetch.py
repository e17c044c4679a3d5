"""``auditor snapshot``, ``auditor clusters`` and ``auditor columns``: the fetch stage's commands.

Thin: options are parsed here and resolved through :class:`auditor.cli.common.Settings` (flags over
``BIGID_URL`` / ``BIGID_TOKEN`` / ``AUDITOR_DB`` over ``auditor.toml``); the work is done by
:mod:`auditor.bigid.client` and :mod:`auditor.snapshot`. The API key is never a command-line value:
it comes from ``BIGID_TOKEN``, ``--token-file`` or a hidden prompt. :func:`api_options` and
:func:`client_from_settings` are reused by ``auditor run``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from auditor.bigid.auth import SCHEMES
from auditor.cli.common import (
    PathOption,
    Settings,
    db_option,
    pass_settings,
    setting_type,
    table_or_json_option,
    write_output,
)
from auditor.config import CLUSTER_ID_PARAMS
from auditor.errors import ConfigError
from auditor.store.runs import cluster_list_note, listing_notes, mismatch_count, skipped_note
from auditor.textsafe import counted, display_width, fit, one_line

if TYPE_CHECKING:
    from auditor.bigid.client import BigIDClient

F = TypeVar("F", bound=Callable[..., Any])

API_OPTION_NAMES = (
    "url",
    "token_file",
    "auth_scheme",
    "cluster_id_param",
    "page_size",
    "connect_timeout",
    "read_timeout",
    "max_answer_mib",
    "ca_bundle",
    "insecure",
)


def api_options(func: F) -> F:
    """The options that say how to reach the tenant (keyword arguments named as in
    :data:`API_OPTION_NAMES`, all ``None`` unless given, so the config file can fill them)."""
    return _api_options(func, paging=True)


def single_request_api_options(func: F) -> F:
    """:func:`api_options` without ``--page-size``, for a command that makes one request with the
    user's own ``--limit``: there the option would do nothing."""
    return _api_options(func, paging=False)


def _api_options(func: F, *, paging: bool) -> F:
    options = [
        click.option("--url", default=None, metavar="URL", help="BigID base URL (env BIGID_URL)."),
        click.option(
            "--token-file",
            default=None,
            type=PathOption(dir_okay=False),
            help="File holding the API key, on its first line (else env BIGID_TOKEN, else the config file's "
            "token_file, else a hidden prompt).",
        ),
        click.option(
            "--auth-scheme",
            default=None,
            type=click.Choice(list(SCHEMES)),
            help="Authorization header form [default: auto: Bearer, then bare, then token exchange].",
        ),
        click.option(
            "--cluster-id-param",
            default=None,
            type=click.Choice(list(CLUSTER_ID_PARAMS)),
            help="Name of the similar-columns endpoint's cluster id parameter [clusterId, the tutorial's; "
            "cluster_id is tried on a 400].",
        ),
        *(
            [
                click.option(
                    "--page-size",
                    default=None,
                    type=setting_type("page_size"),
                    help="Rows per request [1000].",
                )
            ]
            if paging
            else []
        ),
        click.option(
            "--connect-timeout", default=None, type=setting_type("connect_timeout"), help="Seconds [10]."
        ),
        click.option("--read-timeout", default=None, type=setting_type("read_timeout"), help="Seconds [60]."),
        click.option(
            "--max-answer-mib",
            default=None,
            type=setting_type("max_answer_mib"),
            help="Largest answer held, decoded, in MiB [256].",
        ),
        click.option(
            "--ca-bundle",
            default=None,
            type=PathOption(dir_okay=False),
            help="PEM file of the CA that signed the tenant's certificate.",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            default=None,
            help="Do not verify the TLS certificate (prints a warning; prefer --ca-bundle).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _number(settings: Settings, flag: Any, key: str, default: float, kind: type) -> Any:
    """A numeric setting: the flag (checked by click), else the file's (checked when it was read,
    against the same bounds: config.RANGES), else ``default``."""
    return kind(settings.value(flag, None, key, default))


def client_from_settings(settings: Settings, *, workers: int | None = None, **flags: Any) -> BigIDClient:
    """A :class:`~auditor.bigid.client.BigIDClient` from flags (``api_options``), env and config.

    Raises :class:`ConfigError` (exit 2) when no URL is configured or the key cannot be found.
    """
    from auditor.bigid.client import BigIDClient, ClientOptions

    unknown = set(flags) - set(API_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown API option(s): {', '.join(sorted(unknown))}")
    url = settings.bigid_url(flags.get("url"))
    if not url:
        raise ConfigError(
            "no BigID URL configured",
            hint="pass --url https://your-tenant.example.net, set BIGID_URL, or set url in auditor.toml "
            "(to try the tool without a tenant: auditor run, which uses the built-in sandbox)",
        )
    token = settings.token(flags.get("token_file"), prompt=True)
    scheme = str(settings.value(flags.get("auth_scheme"), None, "auth_scheme", "auto"))
    cluster_param = str(settings.value(flags.get("cluster_id_param"), None, "cluster_id_param", "clusterId"))
    insecure = settings.value(flags.get("insecure"), None, "insecure", False)
    options = ClientOptions(
        url=url,
        token=token,
        auth_scheme=scheme,
        cluster_id_param=cluster_param,
        connect_timeout=_number(settings, flags.get("connect_timeout"), "connect_timeout", 10.0, float),
        read_timeout=_number(settings, flags.get("read_timeout"), "read_timeout", 60.0, float),
        ca_bundle=settings.value(flags.get("ca_bundle"), None, "ca_bundle"),
        verify=not bool(insecure),
        page_size=_number(settings, flags.get("page_size"), "page_size", 1000, int),
        max_answer_bytes=int(
            _number(settings, flags.get("max_answer_mib"), "max_answer_mib", 256, float) * 2**20
        ),
        workers=_number(settings, workers, "workers", 4, int),
    )
    return BigIDClient(options)


def _workers(settings: Settings, flag: int | None) -> int:
    return int(_number(settings, flag, "workers", 4, int))


def _processes(settings: Settings, flag: int | None) -> int | None:
    """Decoding processes: the flag, else ``processes`` in the config, else None (the default)."""
    value = settings.value(flag, None, "processes", None)
    return None if value is None else int(value)


def processes_option(func: F) -> F:
    """``--processes N``, shared by ``auditor snapshot`` and ``auditor run``."""
    return click.option(
        "--processes",
        default=None,
        type=setting_type("processes"),
        help="Processes decoding pages; 0 decodes in the fetching threads [2 with 2+ CPUs for 20,000+ "
        "columns, else 0].",
    )(func)


def max_failed_option(func: F) -> F:
    """``--max-failed-clusters N``, shared by ``auditor snapshot`` and ``auditor run``."""
    return click.option(
        "--max-failed-clusters",
        default=None,
        type=setting_type("max_failed_clusters"),
        metavar="N",
        help="Clusters that may fail (recorded; the run is then not complete) before the snapshot "
        "stops; 0 stops at the first [10].",
    )(func)


def _max_failed_clusters(settings: Settings, flag: int | None) -> int:
    """The flag, else ``max_failed_clusters`` in the config, else the default (10)."""
    from auditor.snapshot import DEFAULT_MAX_FAILED_CLUSTERS

    return int(settings.value(flag, None, "max_failed_clusters", DEFAULT_MAX_FAILED_CLUSTERS))


def skip_cluster_option(func: F) -> F:
    """``--skip-cluster ID`` (repeatable), shared by ``auditor snapshot`` and ``auditor run``."""
    return click.option(
        "--skip-cluster",
        "skip_clusters",
        multiple=True,
        metavar="ID",
        help="Leave this cluster out of the run, as if the tenant had not listed it (repeatable; "
        "config: skip_clusters).",
    )(func)


def max_minutes_option(func: F) -> F:
    """``--max-minutes M``, shared by ``auditor snapshot`` and ``auditor run``."""
    return click.option(
        "--max-minutes",
        default=None,
        type=setting_type("max_minutes"),
        metavar="M",
        help="Stop the snapshot if it has not finished after M minutes (the run is then not complete) "
        "[no limit].",
    )(func)


def _max_seconds(settings: Settings, flag: float | None) -> float | None:
    """``--max-minutes``, else ``max_minutes`` in the config, in seconds; ``None``: no limit."""
    value = settings.value(flag, None, "max_minutes")
    return None if value is None else float(value) * 60


@click.command("snapshot")
@api_options
@click.option(
    "--filter", "cluster_filter", default=None, metavar="EXPR", help="Clusters filter, e.g. size=20."
)
@click.option("--workers", default=None, type=setting_type("workers"), help="Clusters fetched at once [4].")
@processes_option
@max_failed_option
@max_minutes_option
@skip_cluster_option
@db_option
@pass_settings
def snapshot_command(
    settings: Settings,
    /,
    cluster_filter: str | None,
    workers: int | None,
    processes: int | None,
    max_failed_clusters: int | None,
    max_minutes: float | None,
    skip_clusters: tuple[str, ...],
    db: str | None,
    **api: Any,
) -> None:
    """Fetch every cluster and every column into a new run; print the run id.

    The run is complete only if everything was fetched; otherwise it is recorded as failed (with the
    reason) and the command exits 3. A cluster whose columns cannot be fetched (403, 404, 5xx after
    the retries, a timeout, an invalid record) is recorded and the others are fetched all the same,
    until more than --max-failed-clusters have failed; a refused key (401), the clusters listing or
    the database failing stops at once, and so does --max-minutes passing (the clusters fetched in full
    are kept).
    """
    from auditor.progress import Progress
    from auditor.snapshot import take_snapshot

    count = _workers(settings, workers)
    limit = _max_failed_clusters(settings, max_failed_clusters)
    max_seconds = _max_seconds(settings, max_minutes)
    client = client_from_settings(settings, workers=count, **api)
    engine = settings.engine(db)
    progress = Progress(enabled=False if settings.quiet else None)
    with client:
        run = take_snapshot(
            engine,
            client,
            cluster_filter=cluster_filter,
            workers=count,
            progress=progress,
            processes=_processes(settings, processes),
            max_failed_clusters=limit,
            max_seconds=max_seconds,
            skip_clusters=settings.list_value(skip_clusters, "skip_clusters"),
        )
    click.echo(str(run.id))
    seconds = (run.finished_at - run.started_at).total_seconds() if run.finished_at else 0.0
    counts = ", ".join(
        counted(getattr(run, field) or 0, word, many)
        for field, word, many in (("requests", "request", None), ("retries", "retry", "retries"))
    )
    settings.info(
        f"run {run.id} complete: {counted(run.clusters_stored or 0, 'cluster')}, "
        f"{counted(run.columns_stored or 0, 'column')} in {seconds:.1f} s "
        f"({counts}, auth scheme {run.auth_scheme})"
    )
    details = run.details or {}
    if left_out := skipped_note(details):
        settings.info(f"note: {left_out}")
    for said in listing_notes(details):
        settings.info(f"note: {said}")
    if listing := cluster_list_note(details):
        settings.info(f"note: {listing}")
    for kind, what in (("size", "cluster size"), ("total", "totalCount")):
        count = mismatch_count(details, kind)
        if count:
            settings.info(f"note: {count} cluster(s) whose {what} differs from the columns fetched")


@click.command("clusters")
@api_options
@click.option(
    "--filter", "cluster_filter", default=None, metavar="EXPR", help="Clusters filter, e.g. size=20."
)
@table_or_json_option
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@pass_settings
def clusters_command(
    settings: Settings, /, cluster_filter: str | None, fmt: str, output: str | None, **api: Any
) -> None:
    """List the tenant's clusters (GET /api/v1/clusters, every page)."""
    _guard_output(settings, output, api)
    with client_from_settings(settings, **api) as client:
        rows = client.list_clusters(cluster_filter)
    if fmt == "json":
        write_output(
            json.dumps({"clusters": [raw for _, raw in rows]}, indent=2, ensure_ascii=False) + "\n", output
        )
        return
    table = [
        (
            c.id,
            c.name or "",
            "" if c.size is None else str(c.size),
            c.severity or "",
            c.status or "",
            ", ".join(c.labels),
        )
        for c, _ in rows
    ]
    write_output(_table(("ID", "NAME", "SIZE", "SEVERITY", "STATUS", "LABELS"), table), output)
    settings.info(f"{len(rows)} cluster(s)")


@click.command("columns")
@click.argument("cluster_id")
@single_request_api_options
@click.option("--limit", type=click.IntRange(0), default=None, help="Maximum rows to return.")
@click.option("--skip", type=click.IntRange(0), default=None, help="Rows to skip.")
@click.option("--filter", "column_filter", default=None, metavar="EXPR", help="Filter on column metadata.")
@click.option("--search-text", default=None, help="Search column names and attributes.")
@click.option("--sort", default=None, help="Field to sort by (default _id).")
@click.option("--offset-key", default=None, help="Continuation key for advanced paging.")
@click.option("--sample", type=click.IntRange(1), default=None, help="Random sample of N columns.")
@click.option("--ignore-limit", is_flag=True, default=None, help="Ask the server to ignore --limit.")
@table_or_json_option
@click.option("--output", "-o", type=PathOption(dir_okay=False), help="Write to a file instead of stdout.")
@pass_settings
def columns_command(
    settings: Settings,
    /,
    cluster_id: str,
    limit: int | None,
    skip: int | None,
    column_filter: str | None,
    search_text: str | None,
    sort: str | None,
    offset_key: str | None,
    sample: int | None,
    ignore_limit: bool | None,
    fmt: str,
    output: str | None,
    **api: Any,
) -> None:
    """One request to the similar-columns endpoint for CLUSTER_ID, with exactly the given parameters."""
    _guard_output(settings, output, api)
    with client_from_settings(settings, **api) as client:
        page = client.get_columns(
            cluster_id,
            limit=limit,
            skip=skip,
            filter=column_filter,
            search_text=search_text,
            sort=sort,
            offset_key=offset_key,
            ignore_limit=ignore_limit,
            sample=sample,
        )
    if fmt == "json":
        document = {
            "cluster_id": cluster_id,
            "totalCount": page.total,
            "columns": [raw for _, raw in page.rows],
        }
        write_output(json.dumps(document, indent=2, ensure_ascii=False) + "\n", output)
        return
    table = [
        (
            c.fullyQualifiedName,
            c.columnName or "",
            c.tableName or "",
            c.source or "",
            c.dataType or "",
            "yes" if c.isPrimary else "",
            ", ".join(
                f"{a.attribute_name}({a.rank})" if a.rank else str(a.attribute_name) for a in c.attributes
            ),
            ", ".join(f"{t.tagName}={t.tagValue}" for t in c.tags),
        )
        for c, _ in page.rows
    ]
    header = ("FQN", "COLUMN", "TABLE", "SOURCE", "TYPE", "PK", "ATTRIBUTES", "TAGS")
    write_output(_table(header, table), output)
    total = "not given" if page.total is None else str(page.total)
    settings.info(f"{len(page.rows)} column(s) returned; totalCount {total}")


def _guard_output(settings: Settings, output: str | None, api: dict[str, Any]) -> None:
    """Refuse an ``--output`` that is a file the command reads (a probe: ``clusters --token-file
    key -o key`` replaced the API key with the cluster table, exit 0; so did the CA bundle and the
    settings file), before the key is read or the tenant asked."""
    inputs = {"--token-file": api.get("token_file"), "--ca-bundle": api.get("ca_bundle")}
    settings.guard_outputs(None, {"--output": output}, inputs, uses_database=False)


def _table(header: tuple[str, ...], rows: Sequence[Sequence[str]]) -> str:
    # Live catalog text: no control character may reach the terminal, and wide characters take two
    # columns (auditor.textsafe).
    rows = [[one_line(cell) for cell in row] for row in rows]
    widths = [display_width(h) for h in header]
    for row in rows:
        widths = [max(w, display_width(cell)) for w, cell in zip(widths, row, strict=True)]
    widths = [min(w, 60) for w in widths]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(fit(cell, width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)]) + "\n"


def register(cli: click.Group) -> None:
    cli.add_command(snapshot_command)
    cli.add_command(clusters_command)
    cli.add_command(columns_command)
