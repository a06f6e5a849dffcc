"""``funnelbench spaces`` and ``funnelbench search``: thin layers over :mod:`funnelbench.search`."""

from __future__ import annotations

import typer

from ..tables import MACS_NOTE, human
from ._common import command, console, make_table, print_json


@command("spaces")
def spaces_cmd(
    name: str = typer.Argument(None, help="A shipped space's name or a .yaml file: show its decisions and extremes."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
):
    """List the shipped search spaces, or show one: its decisions, how many distinct layouts it
    holds, and its cheapest and dearest layouts in MACs and params (exact, nothing built)."""
    from ..search.space import describe, list_spaces, load_space

    if name is None:
        rows = []
        for n in list_spaces():
            space = load_space(n)
            stats = space.stats()
            rows.append({"space": n, "layouts": stats.layouts, "min_macs": stats.cheapest_macs[1],
                         "max_macs": stats.dearest_macs[1], "baselines": len(space.baselines),
                         "description": space.description})
        if json_out:
            print_json(rows)
            return
        console.print(make_table(None, ["space", "layouts", "MACs from", "MACs to", "baselines", "description"],
                                 [[r["space"], f"{r['layouts']:,}", human(r["min_macs"]), human(r["max_macs"]),
                                   r["baselines"], r["description"]] for r in rows],
                                 right={"layouts", "MACs from", "MACs to", "baselines"}))
        console.print(f"[dim]`funnelbench spaces NAME` shows one; {MACS_NOTE}.[/dim]")
        return
    space = load_space(name)
    stats = space.stats()
    extremes = [("cheapest in MACs", stats.cheapest_macs), ("dearest in MACs", stats.dearest_macs),
                ("fewest params", stats.cheapest_params), ("most params", stats.dearest_params)]
    if json_out:
        print_json({"space": space.name, "file": space.path, "description": space.description,
                    "layouts": stats.layouts, "decisions": describe(space),
                    "extremes": [{"which": w, "layout": str(l), "macs": m, "params": p} for w, (l, m, p) in extremes],
                    "baselines": [str(b) for b in space.baselines]})
        return
    console.print(f"[bold]{space.name}[/bold]: {space.description}")
    console.print(f"{stats.layouts:,} distinct layouts" + (f"; file {space.path}" if space.path else ""))
    console.print(make_table(None, ["decision", "stages", "values"],
                             [[r["decision"], r["stages"], r["values"]] for r in describe(space)]))
    console.print(make_table(None, ["", "layout", "MACs", "params"],
                             [[w, str(l), human(m), human(p)] for w, (l, m, p) in extremes], right={"MACs", "params"}))
    if space.baselines:
        console.print("baselines: " + "; ".join(str(b) for b in space.baselines))
    console.print(f"[dim]{MACS_NOTE}; full-size layouts, one image.[/dim]")
