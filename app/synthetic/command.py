"""`radar demo`: the command's options, light to import (the demo loads the whole service
only when it runs, so that every `radar` command starts fast)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--customers", default=2000, show_default=True, type=click.IntRange(20, 100_000))
@click.option(
    "--days", default=120, show_default=True, type=click.IntRange(7, 730), help="Days streamed live"
)
@click.option(
    "--history-days",
    default=240,
    show_default=True,
    type=click.IntRange(150, 1000),
    help="Days of history loaded first (the drop rules need 21 weeks before a defection)",
)
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Target wall-clock seconds for the whole run (0: as fast as possible)",
)
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free"
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A new SQLite file to keep (default: a temporary one)",
)
@click.option("--keep-running", is_flag=True, help="Keep serving after the stream, until Ctrl-C")
@click.option("--quiet", is_flag=True, help="Only the summary, no line per alert")
def demo_command(
    customers: int,
    days: int,
    history_days: int,
    duration: float,
    seed: int,
    port: int,
    db: Path | None,
    keep_running: bool,
    quiet: bool,
) -> None:
    """Stream a synthetic chain with known defectors through a live service, at accelerated
    time, and watch the alerts open (the dashboard works meanwhile)."""
    from app.synthetic.demo import DemoOptions, run_demo

    options = DemoOptions(customers, days, history_days, duration, seed, port, keep_running, quiet)
    run_demo(options, db)
