"""Draw the benchmark results as charts and print them as Markdown tables.

Reads the JSON files the benchmark scripts write (``benchmarks/results/*.json``) and draws, for
each, one SVG with a panel per side-by-side table in it: a horizontal bar per contender and
measure, on a log scale (rates differ by orders of magnitude). matplotlib draws it when it is
installed; otherwise this script writes the SVG itself, so the docs need no extra dependency.

    python benchmarks/plot.py                      # charts into docs/assets/benchmarks/
    python benchmarks/plot.py --markdown           # and print the tables
    python benchmarks/plot.py --update-docs docs/benchmarks.md
    python benchmarks/plot.py results/x.json --out /tmp/charts

``--update-docs`` rewrites, in a Markdown file, every region between ``<!-- tables:NAME -->``
and ``<!-- /tables -->`` with the tables of ``results/NAME.json``, so the figures in the docs
are the ones the last run wrote.

A "table" is any top-level entry mapping names to numbers (one measure) or to mappings of
measure names to numbers (several measures, one colour each).
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import math
import os
import re
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "docs", "assets", "benchmarks")
COLOURS = ("#3f51b5", "#ff9800", "#009688", "#e91e63", "#795548")
SKIP = {"machine", "command"}
# the row each table's ratios are taken against, where a table has one
REFERENCES = (
    "spoolkit (get_batch+ack)",
    "raw os.write loop",
    "FileHandler",
    "JSONRenderer to file",
    "disk, 1 worker(s)",
)

Table = dict[str, dict[str, float]]  # row -> measure -> value


def tables(results: dict[str, Any]) -> dict[str, Table]:
    """The side-by-side tables of a results file, by title."""
    out: dict[str, Table] = {}
    for title, value in results.items():
        if title in SKIP or not isinstance(value, dict) or not value:
            continue
        if all(_number(v) for v in value.values()):
            out[title] = {row: {"value": float(v)} for row, v in value.items()}
        elif all(
            isinstance(v, dict) and v and all(map(_number, v.values())) for v in value.values()
        ):
            out[title] = {row: {m: float(x) for m, x in v.items()} for row, v in value.items()}
    return out


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numbers(v: object) -> bool:
    return isinstance(v, dict) and bool(v) and all(map(_number, v.values()))


def _measures(table: Table) -> list[str]:
    seen: list[str] = []
    for row in table.values():
        seen += [m for m in row if m not in seen]
    return seen


def markdown(name: str, results: dict[str, Any], *, heading: bool = True) -> str:
    """The tables of a results file as Markdown, with the command that made them."""
    parts = [f"### {name}", ""] if heading else []
    if results.get("command"):
        where = f" in `{results['dir']}`" if results.get("dir") else ""
        parts += [f"Made with `{results['command']}`{where}.", ""]
    machine = results.get("machine") or {}
    if machine:
        facts = ", ".join(f"{k} {v}" for k, v in sorted(machine.items()))
        parts += [f"Machine: {facts}.", ""]
    scalars = {k: v for k, v in results.items() if k not in SKIP and _number(v)}
    if scalars:
        parts += [", ".join(f"{k}: **{_fmt(float(v))}**" for k, v in scalars.items()), ""]
    for title, table in tables(results).items():
        measures = _measures(table)
        ref = next((r for r in REFERENCES if r in table), None)
        parts += [f"**{title}**" + (f" (ratios to {ref})" if ref else ""), ""]
        parts += ["| | " + " | ".join(measures) + " |", "|---" * (len(measures) + 1) + "|"]
        for row, values in table.items():
            cells = []
            for m in measures:
                cell = _fmt(values[m]) if m in values else ""
                base = table[ref].get(m) if ref else None
                if cell and base:
                    cell += f" ({values[m] / base:.2f}x)"
                cells.append(cell)
            parts.append(f"| {row} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


_REGION = re.compile(r"<!-- tables:(\w+) -->\n.*?<!-- /tables -->", re.S)


def update_docs(path: str, results: dict[str, dict[str, Any]]) -> int:
    """Rewrite the table regions of the Markdown file ``path``; return how many."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    done = 0

    def tables_of(m: re.Match[str]) -> str:
        nonlocal done
        name = m.group(1)
        if name not in results:
            return m.group(0)  # no results file for it this time: leave it as it is
        done += 1
        body = markdown(name, results[name], heading=False)
        return f"<!-- tables:{name} -->\n{body}\n<!-- /tables -->"

    text = _REGION.sub(tables_of, text)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return done


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"


# -- drawing -----------------------------------------------------------------------------------


def draw(name: str, results: dict[str, Any], out_dir: str) -> str | None:
    """Draw the tables of one results file into ``out_dir/<name>.svg``; return its path."""
    found = tables(results)
    if not found:
        return None
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.svg")
    try:
        import matplotlib
    except ImportError:
        svg = _svg(name, results.get("command"), found)
        with open(path, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        matplotlib.use("Agg")
        _matplotlib(name, found, path)
    return path


def _matplotlib(name: str, found: dict[str, Table], path: str) -> None:
    import matplotlib.pyplot as plt

    rows = sum(len(t) for t in found.values())
    fig, axes = plt.subplots(len(found), 1, figsize=(9, 1.2 + 0.45 * rows), squeeze=False)
    for ax, (title, table) in zip(axes[:, 0], found.items(), strict=True):
        measures = _measures(table)
        names = list(table)
        height = 0.8 / len(measures)
        for i, m in enumerate(measures):
            ys = [j + i * height for j in range(len(names))]
            xs = [table[n].get(m, 0.0) for n in names]
            ax.barh(ys, xs, height=height, label=m, color=COLOURS[i % len(COLOURS)])
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(names))], names)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(title, loc="left")
        if len(measures) > 1:
            ax.legend(loc="lower right")
    fig.suptitle(name)
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


def _svg(name: str, command: str | None, found: dict[str, Table]) -> str:
    """A self-contained SVG: one panel of horizontal log-scale bars per table."""
    label_w, bar_w, value_w, bar_h, gap = 230, 420, 90, 14, 6
    width = label_w + bar_w + value_w + 20
    top = 50
    body: list[str] = []
    y = top
    for title, table in found.items():
        measures = _measures(table)
        values = [v for row in table.values() for v in row.values() if v > 0]
        lo = 10 ** math.floor(math.log10(min(values))) if values else 1.0
        hi = 10 ** math.ceil(math.log10(max(values))) if values else 10.0
        hi = max(hi, lo * 10)
        span = math.log10(hi) - math.log10(lo)

        def x_of(v: float, lo: float = lo, span: float = span) -> float:
            return bar_w * (math.log10(max(v, lo)) - math.log10(lo)) / span

        body.append(_text(10, y, title, size=14, weight="bold"))
        legend_x = label_w
        for i, m in enumerate(measures if len(measures) > 1 else []):
            colour = COLOURS[i % len(COLOURS)]
            body.append(
                f'<rect x="{legend_x}" y="{y - 10}" width="10" height="10" fill="{colour}"/>'
            )
            body.append(_text(legend_x + 14, y, m, size=11))
            legend_x += 20 + 7 * len(m)
        y += 12
        axis_top = y
        for row, vals in table.items():
            group_h = len(measures) * bar_h
            body.append(_text(label_w - 8, y + group_h / 2 + 4, row, size=11, anchor="end"))
            for i, m in enumerate(measures):
                if m not in vals:
                    continue
                w = x_of(vals[m])
                colour = COLOURS[i % len(COLOURS)]
                yy = y + i * bar_h
                body.append(
                    f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" '
                    f'fill="{colour}"><title>{html.escape(f"{row} {m}: {vals[m]:,.1f}")}</title>'
                    "</rect>"
                )
                body.append(_text(label_w + w + 4, yy + bar_h - 4, _fmt(vals[m]), size=10))
            y += group_h + gap
        exp = math.log10(lo)
        while exp <= math.log10(hi) + 1e-9:
            x = label_w + x_of(10**exp)
            body.append(
                f'<line x1="{x:.1f}" y1="{axis_top - 2}" x2="{x:.1f}" y2="{y}" '
                'stroke="#bbb" stroke-dasharray="2,3"/>'
            )
            body.append(_text(x, y + 12, _fmt(10**exp), size=9, anchor="middle"))
            exp += 1
        y += 36
    header = [_text(10, 22, name, size=16, weight="bold")]
    if command:
        header.append(_text(10, 38, f"$ {command}", size=11, family="monospace"))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}" font-family="sans-serif">\n'
        f'<rect width="{width}" height="{y}" fill="white"/>\n'
        + "\n".join(header + body)
        + "\n</svg>\n"
    )


def _text(  # noqa: PLR0917 - a small SVG helper, positional like the SVG attributes
    x: float,
    y: float,
    text: str,
    size: int = 12,
    weight: str = "normal",
    anchor: str = "start",
    family: str | None = None,
) -> str:
    font = f' font-family="{family}"' if family else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-weight="{weight}" '
        f'text-anchor="{anchor}"{font}>{html.escape(text)}</text>'
    )


def main(argv: list[str] | None = None) -> int:
    """Draw every results file given (default: benchmarks/results/*.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="*", help="results JSON files")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the SVG files go")
    parser.add_argument("--markdown", action="store_true", help="also print Markdown tables")
    parser.add_argument("--update-docs", metavar="MD", help="rewrite the table regions of MD")
    args = parser.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(HERE, "results", "*.json")))
    if not files:
        print("no results files: run the benchmarks first (make bench)", file=sys.stderr)
        return 1
    loaded: dict[str, dict[str, Any]] = {}
    for file in files:
        name = os.path.splitext(os.path.basename(file))[0]
        with open(file, encoding="utf-8") as f:
            results = loaded[name] = json.load(f)
        path = draw(name, results, args.out)
        print(f"{file}: {path or 'no table to draw'}", file=sys.stderr)
        if args.markdown:
            print(markdown(name, results))
    if args.update_docs:
        n = update_docs(args.update_docs, loaded)
        print(f"{args.update_docs}: {n} table region(s) rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
