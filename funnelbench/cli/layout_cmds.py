"""``funnelbench parse`` and ``funnelbench presets``."""

from __future__ import annotations

import typer

from ..layout import options_markdown
from ..tables import MACS_NOTE, human, layout_summary, presets_summary
from ._common import command, console, make_table, print_json

# The grammar under the options of `funnelbench parse --help`; the table is the one docs/grammar.md
# and funnelbench.layout's docstring show, made from funnelbench.layout.OPTIONS.
GRAMMAR_HELP = (
    "**The layout grammar** (spaces are ignored): stages `LAYERS(TOKENS, options)` joined by `-`, "
    "then options for every stage, as in `B6(197, m4096)-6(99)-2(50, m1536), max`. A stage's own "
    "option wins over one after the last stage; `h1024` is the same as `hidden=1024`.\n\n" + options_markdown()
)


@command("parse", epilog=GRAMMAR_HELP)
def parse_cmd(
    layout: str = typer.Argument(..., help='A layout such as "B6(197, m4096)-6(99)-2(50, m1536)", or a preset name.'),
    num_classes: int = typer.Option(1000, "--num-classes", min=1, help="Classes of the head (counts only)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Parse a layout: canonical form and per-stage params and MACs (analytic, no model built).

    MACs are multiply-accumulates of one forward pass of one image (the papers' "FLOPs");
    FLOPs = 2 x MACs.
    """
    summary = layout_summary(layout, num_classes=num_classes)
    if json_out:
        print_json(summary)
        return
    rows = []
    for p in summary["parts"]:
        rows.append(
            [
                p["part"],
                p["layers"],
                p["tokens"],
                p["hidden"],
                p["mlp"],
                p["heads"],
                p["pool_in"],
                human(p["params"]),
                human(p["macs"]),
                f"{100 * p['macs_share']:.1f}",
            ]
        )
    console.print(f"[bold]{summary['layout']}[/bold]")
    console.print(
        f"{summary['image_size']} px images, {summary['stem']}, "
        f"{'class-token' if summary['head'] == 'cls' else 'average-pool'} head, {summary['layers']} layers: "
        f"[bold]{human(summary['params'])}[/bold] params, [bold]{human(summary['macs'], 'MACs')}[/bold] "
        f"({human(summary['flops'], 'FLOPs')})"
    )
    console.print(
        make_table(
            None,
            ["part", "layers", "tokens", "hidden", "MLP", "heads", "pool in", "params", "MACs", "MACs %"],
            rows,
            right={"layers", "tokens", "hidden", "MLP", "heads", "params", "MACs", "MACs %"},
        )
    )
    console.print(f"[dim]{MACS_NOTE}. Stage rows include the projection and pool that enter them.[/dim]")


@command("presets")
def presets_cmd(
    pattern: str = typer.Argument("*", help='Shell wildcard over preset names, e.g. "funnel-*".'),
    json_out: bool = typer.Option(False, "--json", help="Print the presets as JSON."),
):
    """List named layouts with analytic params and MACs, next to the numbers their papers report."""
    rows = presets_summary(pattern)
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no preset matches {pattern!r}")
        return
    table_rows = [
        [
            r["name"],
            r["layout"],
            f"{r['params'] / 1e6:.2f}",
            f"{r['macs'] / 1e9:.2f}",
            r["paper_params_m"],
            r["paper_gmacs"],
            r["source"],
        ]
        for r in rows
    ]
    console.print(
        make_table(
            None,
            ["preset", "layout", "params (M)", "GMACs", "paper params (M)", "paper GMACs", "source"],
            table_rows,
            right={"params (M)", "GMACs", "paper params (M)", "paper GMACs"},
        )
    )
    console.print(f"[dim]{MACS_NOTE}; one 224 px image unless the layout says otherwise.[/dim]")
