"""``bench list``: the registered models, with parameter counts at a profile's sizes."""

from __future__ import annotations

import typer

from bench.commands import command
from bench.commands.common import fail
from bench.config import ConfigError, SweepConfig, profile
from bench.declare import declared_option

PROFILE = declared_option(SweepConfig, "profile")


@command("list", order=30)
def list_command(
    profile_name: str = typer.Option(PROFILE.default, "--profile", help="Sizes used for the parameter counts."),
) -> None:
    """Registered models with parameter counts (at the profile's sizes) and a description."""
    from tabulate import tabulate

    from bench.measure import parameter_count
    from bench.models import accepted_options
    from rerankers import build_model, get_spec, model_names

    try:
        settings = profile(profile_name)
    except ConfigError as error:
        fail(str(error))
    workload = settings["workload"]
    rows = []
    for name in model_names():
        spec = get_spec(name)
        options = accepted_options(name, settings.get("model_kwargs", {}))
        model = build_model(name, user_dim=workload.user_dim, item_dim=workload.item_dim, **options)
        used = {**spec.options(), **options}  # the values the count was computed at
        shown = ", ".join(f"{k}={v}" for k, v in used.items())
        rows.append((name, f"{parameter_count(model):,}", spec.description.split(". ")[0], shown))
    typer.echo(f"parameters at the {profile_name!r} profile's sizes, with the options shown (--model-arg sets them)")
    typer.echo(tabulate(rows, headers=["model", "params", "description", "options"], maxcolwidths=[None, None, 44, 44]))
