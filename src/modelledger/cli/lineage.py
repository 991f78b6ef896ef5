"""Where things came from: ``lineage`` (upstream graph), ``diff`` (two versions) and
``trace`` (one prediction back to its model, approval, code and data)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from modelledger import LineageEdge, LineageGraph, LineageNode, Registry, VersionDiff

from ._common import (
    echo_json,
    json_option,
    make_console,
    one_line,
    print_section,
    registry_options,
)

LINEAGE_FORMATS = ("tree", "json", "dot", "mermaid")


def _digest_prefix(digest: str | None) -> str:
    """``sha256:`` and the first 12 hex digits: enough to tell versions apart on screen."""
    return (digest or "")[:19]


def _node_text(node: LineageNode, edge_label: str = "") -> str:
    """One line of a lineage tree, as rich markup."""
    d = node.data
    if node.kind == "dataset":
        digest = escape(_digest_prefix(d.get("digest")))
        text = f"[bold]{escape(node.id)}[/]  {d.get('rows', 0):,} rows  [dim]{digest}[/]"
    elif node.kind == "model":
        text = f"[bold cyan]{escape(node.label)}[/]"
    elif node.kind == "step":
        text = f"[yellow]{escape(node.label)}[/]"
        if d.get("columns"):
            text += f"  [dim]columns: {escape(', '.join(map(str, d['columns'])))}[/]"
    else:  # source
        text = f"[green]source {escape(node.label)}[/]"
        if d.get("query"):
            text += f"  [dim]{escape(one_line(str(d['query'])))}[/]"
        if d.get("extracted_at"):
            text += f"  [dim]extracted {escape(str(d['extracted_at']))}[/]"
    return f"[dim]{escape(edge_label)}:[/] {text}" if edge_label else text


def lineage_tree(graph: LineageGraph, *, downstream: bool) -> Any:
    """The graph as a rich Tree from its root, following edges one way; shared parts once."""
    from rich.tree import Tree  # only this command's output needs it

    def links(node_id: str) -> list[tuple[LineageEdge, LineageNode]]:
        return graph.downstream(node_id) if downstream else graph.upstream(node_id)

    def grow(branch: Any, node_id: str) -> None:
        for edge, node in links(node_id):
            child = branch.add(_node_text(node, edge.label))
            if node.id in expanded:
                if links(node.id):
                    child.add("[dim](shown above)[/]")
                continue
            expanded.add(node.id)
            grow(child, node.id)

    root = graph.nodes[graph.root]
    tree = Tree(_node_text(root))
    expanded = {root.id}
    grow(tree, root.id)
    return tree


@click.command("lineage")
@click.argument("identifier")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(LINEAGE_FORMATS),
    default="tree",
    show_default=True,
    help="tree for people; json, dot (Graphviz) or mermaid for machines and pictures.",
)
@json_option
@registry_options
def lineage(registry: Registry, identifier: str, fmt: str, as_json: bool) -> None:
    """Show everything upstream of a model or data set version: data sets, steps and sources.

    \b
    Example:
        modelledger lineage models:/credit-risk/3
        modelledger lineage models:/credit-risk@production --format mermaid > lineage.mmd
        modelledger lineage datasets:/applications-train/2 --format dot | dot -Tsvg > lineage.svg
    """
    if as_json and fmt not in ("tree", "json"):
        raise click.UsageError(f"--json and --format {fmt} cannot be used together")
    graph = registry.lineage(identifier)
    if as_json or fmt == "json":
        echo_json(graph.to_dict())
    elif fmt == "dot":
        click.echo(graph.to_dot(), nl=False)
    elif fmt == "mermaid":
        click.echo(graph.to_mermaid(), nl=False)
    else:
        make_console().print(lineage_tree(graph, downstream=False))


def _rounded(value: Any, *, metric: bool = False) -> Any:
    """A float as people compare them: metrics to 4 decimals, anything else to 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.4f}" if metric else f"{value:.6g}"
    return value


def _plain(value: Any) -> str:
    """A value as plain text (:func:`print_section` escapes it once)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _print_changes(
    console: Console, title: str, changes: Mapping[str, tuple[Any, Any]], *, metric: bool = False
) -> None:
    if changes:
        rows = [
            (k, f"{_plain(_rounded(old, metric=metric))} -> {_plain(_rounded(new, metric=metric))}")
            for k, (old, new) in changes.items()
        ]
        print_section(console, title, rows)
        console.print()


@click.command("diff")
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@json_option
@registry_options
def diff(registry: Registry, a: str, b: str, as_json: bool) -> None:
    """Show what changed between two model versions.

    Hyperparameters, code revision, framework and dependency versions, data sets (with their
    schema and row counts) and metrics.

    \b
    Example:
        modelledger diff models:/credit-risk/2 models:/credit-risk/3
        modelledger diff models:/credit-risk@production models:/credit-risk/4 --json
    """
    d: VersionDiff = registry.diff(a, b)
    if as_json:
        echo_json(d.to_dict())
        return
    console = make_console()
    if d.empty:
        console.print(f"No differences between {escape(d.a)} and {escape(d.b)}")
        return
    console.print(f"[bold]{escape(d.a)} -> {escape(d.b)}[/]")
    for link in d.links:
        console.print(
            f"{escape(link['from'])} is a {escape(_relation(link['relation']))} {escape(link['to'])}"
        )
    console.print()
    for title, changes in (
        ("Params", d.params),
        ("Metrics", d.metrics),
        ("Code", d.code),
        ("Framework", d.framework),
        ("Dependencies", d.dependencies),
    ):
        _print_changes(console, title, changes, metric=title == "Metrics")
    for ds in d.datasets:
        schema = ds["schema"]
        if ds["old"] is None or ds["new"] is None:
            # one side has no data set in this role: its columns were not removed, just not recorded
            side, other = (d.a, ds["new"]) if ds["old"] is None else (d.b, ds["old"])
            rows = [
                (
                    "Version",
                    f"{ds['old'] or 'no data set recorded'} -> {ds['new'] or 'no data set recorded'}",
                ),
                ("Note", f"{side} has no {ds['role']} data set recorded ({other} on the other side)"),
            ]
            print_section(console, f"Data set: {ds['role']}", rows)
            console.print()
            continue
        rows = [
            ("Version", f"{ds['old']} -> {ds['new']}"),
            ("Digest", f"{_digest_prefix(ds['old_digest'])} -> {_digest_prefix(ds['new_digest'])}"),
            ("Rows", f"{_plain(ds['rows']['old'])} -> {_plain(ds['rows']['new'])}"),
        ]
        if schema["added"]:
            rows.append(("Columns added", ", ".join(schema["added"])))
        if schema["removed"]:
            rows.append(("Columns removed", ", ".join(schema["removed"])))
        for col, change in schema["retyped"].items():
            rows.append((f"Column {col}", f"{change['old']} -> {change['new']}"))
        print_section(console, f"Data set: {ds['role']}", rows)
        console.print()


# --------------------------------------------------------------------------- trace


def _dataset_lines(console: Console, entries: Iterable[Mapping[str, Any]], indent: str) -> None:
    for entry in entries:
        role = f"[{entry['role']}] " if entry.get("role") else ""
        src = entry.get("source") or {}
        where = src.get("uri") or src.get("query") or ""
        console.print(
            f"{indent}{escape(role)}{escape(entry['uri'])}  {entry['rows']:,} rows  "
            f"{escape(entry['digest'][:19])}...  source: {escape(str(src.get('kind')))} {escape(str(where))}",
            soft_wrap=True,
        )
        if entry.get("see_above"):
            console.print(f"{indent}    (steps shown above)")
            continue
        code = src.get("code") or {}
        if code.get("revision"):
            console.print(
                f"{indent}    extracted by {escape(str(code.get('path')))}"
                f" @ {escape(str(code['revision'])[:12])}"
            )
        for step in entry.get("steps") or ():
            cols = f" on {', '.join(step['columns'])}" if step.get("columns") else ""
            rev = (step.get("code") or {}).get("revision")
            console.print(
                f"{indent}    step {escape(step['name'])} ({escape(step['kind'])}){escape(cols)}"
                + (f" @ {escape(str(rev)[:12])}" if rev else ""),
                soft_wrap=True,
            )
            _dataset_lines(console, step.get("inputs") or (), indent + "        ")


def _joined(*parts: Any, sep: str = " ") -> str | None:
    """The parts that are there, joined; None when none is (the row is then left out)."""
    text = sep.join(str(p) for p in parts if p not in (None, "", [], {}))
    return text or None


def _relation(relation: str) -> str:
    """``refresh_of`` as people say it: ``refresh of``."""
    return relation.replace("_", " ")


def link_text(link: Mapping[str, Any]) -> str:
    """One link of a version (``_lineage.version_links``) on one line: the version it re-ran,
    the verdict, and the data that changed."""
    text = str(link["target"])
    if not link.get("found", True):
        text += " (not in this registry)"
    if link.get("verdict"):
        text += f": {link['verdict']}"
        if link.get("verdict_reason"):
            text += f" ({link['verdict_reason']})"
    changed = [
        f"{role} {c.get('old') or '-'} -> {c.get('new') or '-'}"
        for role, c in (link.get("data") or {}).items()
    ]
    if changed:
        text += "; data: " + ", ".join(changed)
    return text


def _built_rows(man: Mapping[str, Any], model_steps: Iterable[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """What the manifest says about how the model was built, leaving out what it does not say."""
    src = man.get("source") or {}
    job = man.get("training_job") or {}
    code = _joined(src.get("repo_url"), src.get("path"))
    if code and src.get("revision"):
        code += f" @ {src['revision']}"
    if code and src.get("dirty") is not None:
        code += f" ({'dirty' if src['dirty'] else 'clean'})"
    python = f"Python {man['python']}" if man.get("python") else None
    framework = _joined(_joined(man.get("framework"), man.get("framework_version")), python, sep=", ")
    deps = len(man.get("dependencies") or {})
    span = _joined(job.get("started_at"), job.get("ended_at"), sep=" -> ")
    host = f"on {job['host']}" if job.get("host") else None
    rows: list[tuple[str, Any]] = [
        ("code", code),
        ("algorithm", man.get("algorithm")),
        ("framework", framework),
        ("dependencies", f"{deps} packages pinned" if deps else None),
        ("params", man.get("params") or None),
        ("metrics", man.get("metrics") or None),
        ("training job", _joined(job.get("id"), span, host)),
    ]
    rows += [
        (
            f"model step {s['name']}",
            _joined(s.get("kind"), _joined(*(s.get("columns") or []), sep=", "), sep=" on "),
        )
        for s in model_steps
    ]
    return [(key, value) for key, value in rows if value is not None]


@click.command("trace")
@click.argument("prediction_id")
@json_option
@registry_options
def trace(registry: Registry, prediction_id: str, as_json: bool) -> None:
    """Trace one prediction back to its model, approval, code and data.

    Prints the prediction and its receipt check, the model version and artefact digests, who
    approved and deployed it (from the ledger), the manifest (code, hyperparameters,
    framework, dependencies, training job) and the data sets with their sources and
    processing steps, recursively. Exits 1 when the receipt does not verify.

    \b
    Example:
        modelledger trace 01JD3M4Q8Z0000001K7WQ2X9RB
        modelledger trace 01JD3M4Q8Z0000001K7WQ2X9RB --json > trace.json
    """
    report = registry.trace(prediction_id)
    if as_json:
        echo_json(report.to_dict())
    else:
        console = make_console()
        p, m, g, man = report.prediction, report.model, report.governance, report.manifest
        check = "valid" if report.receipt_valid else f"INVALID: {report.receipt_problem}"
        print_section(
            console,
            f"Prediction {p['id']}",
            [("time", p["time"]), ("output", p["output"]), ("receipt", check)],
        )
        console.print()
        # an input row may have dozens of columns: one per line reads, one JSON line does not
        inputs = p["input"] if isinstance(p["input"], Mapping) else {"input": p["input"]}
        print_section(console, "Input", [(str(k), v) for k, v in inputs.items()])
        console.print()
        print_section(
            console,
            f"Model {m['uri']}",
            [
                ("digest", m["digest"]),
                ("folder", m["folder"]),
                ("registered", f"{m['registered_by']} {m['registered_at']}"),
            ]
            + [(f"file {f['path']}", f"sha256:{f['sha256']}") for f in m["files"]],
        )
        console.print()
        rows: list[tuple[str, Any]] = [("stage now", g["stage"])]
        rows += [
            (
                "approved",
                f"{a['actor']} {a['time']}: {a['reason']}" + (" (automated)" if a["automated"] else ""),
            )
            for a in g["approvals"]
        ]
        rows += [
            ("deployed", f"@{d['alias']} by {d['actor']} {d['time']}: {d['reason'] or ''}")
            for d in g["deployments"]
        ]
        rows.append(("aliases then", ", ".join(f"@{a}" for a in g["aliases_at_prediction"]) or "-"))
        print_section(console, "Governance (from the ledger)", rows)
        console.print()
        built = [(_relation(link["relation"]), link_text(link)) for link in report.links]
        print_section(console, "How it was built", built + _built_rows(man, report.model_steps))
        if report.datasets:
            console.print()
            console.print("[bold]Data[/]")
            _dataset_lines(console, report.datasets, "  ")
    if not report.receipt_valid:
        raise SystemExit(1)
