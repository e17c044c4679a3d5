"""``auditor db upgrade`` and ``auditor runs``."""

from __future__ import annotations

import json

import click

from auditor.cli.common import Settings, db_option, pass_settings, write_output


@click.group("db")
def db_group() -> None:
    """Manage the snapshot database."""


@db_group.command("upgrade")
@db_option
@pass_settings
def db_upgrade(settings: Settings, db: str | None) -> None:
    """Create the database, or upgrade it to the newest schema."""
    from auditor.store.db import create_db_engine, database_url, display_url, upgrade

    url = database_url(settings.db_target(db))
    before, after = upgrade(create_db_engine(url))
    if before == after:
        click.echo(f"{display_url(url)}: already at schema revision {after}")
    else:
        click.echo(f"{display_url(url)}: upgraded from revision {before or 'empty'} to {after}")


@click.command("runs")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
@pass_settings
def runs_command(settings: Settings, db: str | None, fmt: str, output: str | None) -> None:
    """List the snapshot runs, oldest first."""
    from auditor.store.runs import list_runs

    runs = list_runs(settings.engine(db))
    if fmt == "json":
        write_output(json.dumps({"runs": [run.to_json() for run in runs]}, indent=2) + "\n", output)
        return
    header = f"{'ID':>5}  {'STATUS':<9} {'STARTED (UTC)':<20} {'CLUSTERS':>9} {'COLUMNS':>10}  SOURCE"
    lines = [header]
    for run in runs:
        started = run.started_at.strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{run.id:>5}  {run.status:<9} {started:<20} {run.clusters_stored or 0:>9} "
            f"{run.columns_stored or 0:>10}  {run.source_url or ''}"
        )
    if not runs:
        lines.append("(no runs yet: take one with `auditor snapshot` or try `auditor demo`)")
    write_output("\n".join(lines) + "\n", output)


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
    cli.add_command(runs_command)
