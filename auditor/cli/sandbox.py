"""``auditor sandbox serve``: run the BigID-compatible sandbox in the foreground until Ctrl-C.

Thin: options become a :class:`auditor.sandbox.SandboxConfig`; the URL and the key to use go to stdout
(as ``export`` lines a shell can take), a human summary to stderr.
"""

from __future__ import annotations

import signal
from typing import Any

import click

from auditor.cli.common import Settings, pass_settings


@click.group("sandbox")
def sandbox_group() -> None:
    """A BigID-compatible API for demos and tests (no tenant needed)."""


@sandbox_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
@click.option("--seed", default=1, show_default=True, type=click.IntRange(0), help="Data set seed.")
@click.option(
    "--epoch", default=0, show_default=True, type=click.IntRange(0), help="Drift step: 1% changes each."
)
@click.option(
    "--clusters", default=50, show_default=True, type=click.IntRange(1), help="Clusters at epoch 0."
)
@click.option(
    "--columns",
    default=2000,
    show_default=True,
    type=click.IntRange(1),
    help="Columns over all clusters (at least --clusters: each cluster holds one or more).",
)
@click.option(
    "--auth",
    type=click.Choice(["bearer", "raw", "refresh"]),
    default="bearer",
    show_default=True,
    help="Header form accepted: tutorial Bearer, bare token, or user-token exchange.",
)
@click.option(
    "--token",
    default=None,
    metavar="TEXT",
    help="Key the sandbox accepts (default SAMPLE; a generated user token with --auth refresh).",
)
@click.option("--forbidden-token", default=None, metavar="TEXT", help="A key that is valid but gets 403.")
@click.option(
    "--session-ttl",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a session token lives (refresh exchange).",
)
@click.option(
    "--session-max-requests",
    default=None,
    type=click.IntRange(1),
    help="Data calls a session token allows before it expires.",
)
@click.option(
    "--fail-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of data requests answered with a server error.",
)
@click.option(
    "--fail-status",
    "fail_statuses",
    multiple=True,
    type=click.Choice(["500", "502", "503", "504"]),
    help="Statuses --fail-rate uses (repeatable; default 500).",
)
@click.option(
    "--gateway-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction answered with an HTML 502 page under HTTP 200.",
)
@click.option(
    "--blank-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction answered HTTP 200 with an empty body.",
)
@click.option(
    "--latency", default=0.0, show_default=True, type=click.FloatRange(0), help="Seconds added per request."
)
@click.option(
    "--slow-pages-above",
    default=None,
    type=click.IntRange(1),
    metavar="N",
    help="Column pages asking for more than N rows get a gateway's 504 (too slow to build).",
)
@click.option("--max-page", default=None, type=click.IntRange(1), help="Cap rows per page below limit.")
@click.option(
    "--throttle",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of data requests answered 429.",
)
@click.option(
    "--retry-after", default=1, show_default=True, type=click.IntRange(0), help="Retry-After seconds on 429."
)
@click.option(
    "--repeat-rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Repeat a row every 1/RATE rows of a cluster's column listing.",
)
@click.option(
    "--wrong-totals",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of clusters whose totalCount is off.",
)
@click.option(
    "--totals-direction",
    type=click.Choice(["over", "under", "both"]),
    default="over",
    show_default=True,
    help="Whether --wrong-totals announces more columns than served, fewer, or either (per cluster).",
)
@click.option(
    "--envelope",
    type=click.Choice(["tutorial", "results", "data", "status"]),
    default="tutorial",
    show_default=True,
    help="Response envelope (tutorial: bare array / {results, totalCount}).",
)
@click.option("--aliases", is_flag=True, help="Real-tenant field names (clusterId, objectName, fieldType…).")
@click.option(
    "--soft-auth-errors",
    is_flag=True,
    help='Answer auth failures with HTTP 200 {"success": false, ...} like the 2023 BigID sandbox.',
)
@click.option("--string-counts", is_flag=True, help="Send size and totalCount as strings.")
@pass_settings
def serve(
    settings: Settings, host: str, port: int, token: str | None, fail_statuses: tuple[str, ...], **knobs: Any
) -> None:
    """Serve the BigID-compatible API until Ctrl-C.

    Prints the URL and key to use (stdout), e.g.:

        auditor sandbox serve --port 8080 --clusters 200 --columns 20000
    """
    from auditor.gcpause import tune_for_throwaway_objects
    from auditor.sandbox import SandboxConfig, SandboxServer

    config = SandboxConfig(token=token, fail_statuses=tuple(int(s) for s in fail_statuses) or (500,), **knobs)
    server = SandboxServer(config, host=host, port=port).bind()

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        dataset = server.dataset
        settings.info(
            f"BigID sandbox on {server.url}: seed {config.seed}, epoch {config.epoch}, "
            f"{dataset.cluster_count()} clusters, {dataset.column_count()} columns, auth {config.auth}"
        )
        if config.auth == "refresh":
            settings.info("the key is a user token: exchange it at GET /api/v1/refresh-access-token")
        settings.info("Ctrl-C to stop")
        # stdout last: a script that reads these lines knows the server is listening
        tune_for_throwaway_objects()  # this process only serves from here on
        click.echo(f"export BIGID_URL={server.url}")
        click.echo(f"export BIGID_TOKEN={config.key}")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    settings.info(f"stopped after {server.stats.total} requests")


def register(cli: click.Group) -> None:
    cli.add_command(sandbox_group)
