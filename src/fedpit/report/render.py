"""The report: plots, a table in the layout of the paper's Table 2, and provenance.

One content model is rendered twice: ``report.html`` (self-contained apart from the PNGs
it references relatively, with a small inline stylesheet) and ``report.md``.
Table cells are mean ± sample standard deviation over seeds; ``—`` means not measured;
``(k/n)`` means only k of the row's n runs had the number.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedpit.config.load import to_flat
from fedpit.eval.attack import mia
from fedpit.report import matched, paired, plots
from fedpit.report.collect import RunRecord, by_group, mean_std

PREFERRED_TEST_SETS = ("heldout", "medinstruct")
MISSING = "—"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1, h2 { font-weight: 600; } figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; text-align: center; white-space: normal; }
td:first-child { text-align: left; } .wide { overflow-x: auto; }
.prov { font-family: monospace; font-size: 0.8em; color: #444; }
"""


@dataclass(frozen=True)
class Column:
    """One table column: its section (spanning header), label and cell formatter."""

    section: str
    label: str
    cell: Callable[[list[RunRecord]], str]


@dataclass(frozen=True)
class Figure:
    """One plot of the report, or the reason it is missing."""

    title: str
    caption: str
    file: str | None  # relative to the report directory


def test_sets(runs: list[RunRecord]) -> list[str]:
    """Test sets with results: held-out first, then MedInstruct, then any other by name."""
    found = {e.test_set for r in runs for e in r.evals}
    preferred = [t for t in PREFERRED_TEST_SETS if t in found]
    return preferred + sorted(found - set(preferred))


def fmt(values: list[float | None], total: int) -> str:
    """``mean ± std`` over the values present, with ``(k/n)`` when some runs lack it."""
    present = [v for v in values if v is not None]
    if not present:
        return MISSING
    mean, std = mean_std(present)
    text = f"{mean:.3f}" if len(present) == 1 else f"{mean:.3f} ± {std:.3f}"
    return text if len(present) == total else f"{text} ({len(present)}/{total})"


def _numeric(get: Callable[[RunRecord], float | None]) -> Callable[[list[RunRecord]], str]:
    return lambda members: fmt([get(r) for r in members], len(members))


def _judge(test_set: str) -> Callable[[list[RunRecord]], str]:
    def cell(members: list[RunRecord]) -> str:
        judged = [e.judge for r in members if (e := r.final_eval(test_set)) and e.judge]
        if not judged:
            return MISSING
        if not all(j.ok for j in judged):
            return "unavailable"
        return fmt([j.wt for j in judged], len(members))

    return cell


def _metric(test_set: str, name: str) -> Callable[[RunRecord], float | None]:
    def get(run: RunRecord) -> float | None:
        e = run.final_eval(test_set)
        return getattr(e, name) if e else None

    return get


def _attack(name: str, base: bool = False) -> Callable[[RunRecord], float | None]:
    def get(run: RunRecord) -> float | None:
        a = run.base_attack() if base else run.final_attack()
        return getattr(a, name) if a else None

    return get


def table_columns(runs: list[RunRecord]) -> list[Column]:
    """Utility on each test set, the held-out test loss, then leakage (Table 2 layout)."""
    cols = []
    for ts in test_sets(runs):
        cols += [
            Column(ts, "ROUGE-L", _numeric(_metric(ts, "rouge_l"))),
            Column(ts, "token F1", _numeric(_metric(ts, "token_f1"))),
            Column(ts, "semantic", _numeric(_metric(ts, "semantic"))),
        ]
        if any((e := r.final_eval(ts)) and e.judge for r in runs):  # only if a judge ran
            cols.append(Column(ts, "judge WT", _judge(ts)))
    leak = "leakage"
    cols += [
        Column("utility", "test loss", _numeric(lambda r: r.final_test_loss)),
        Column(leak, "loss gap", _numeric(_attack("loss_gap"))),
        Column(leak, "MIA AUC", _numeric(_attack("mia_auc"))),
        Column(leak, "MIA AUC calibrated", _numeric(_attack("mia_auc_calibrated"))),
    ]
    if any(_attack("canary_logprob")(r) is not None for r in runs):
        cols += [
            Column(leak, "canary log-prob", _numeric(_attack("canary_logprob"))),
            Column(leak, "canary exposure", _numeric(_attack("canary_exposure"))),
        ]
    cols += [
        Column(leak, "extraction ROUGE-L members", _numeric(_attack("extraction_members"))),
        Column(leak, "base floor", _numeric(_attack("extraction_members", base=True))),
    ]
    if any(_attack("synthetic_span_share")(r) is not None for r in runs):
        cols += [
            Column(
                leak, "synthetic ≥ 8-token span share", _numeric(_attack("synthetic_span_share"))
            ),
            Column(leak, "synthetic canary touches", _numeric(_attack("synthetic_canary_touches"))),
        ]
    return cols


def table_rows(runs: list[RunRecord], cols: list[Column]) -> list[list[str]]:
    """One row per method (per β for FedPIT): name, runs, then one cell per column."""
    return [
        [group, str(len(members)), *(c.cell(members) for c in cols)]
        for group, members in by_group(runs).items()
    ]


GRID_KEYS = ("run-dir", "seed", "method", "fed.beta", "arm")


def mixed_rows(runs: list[RunRecord]) -> list[str]:
    """Warnings for rows whose runs differ in more than the seed, or repeat a seed."""
    notes = []
    for group, members in by_group(runs).items():
        flats = [to_flat(r.config) for r in members]
        differ = sorted(
            k for k in flats[0] if k not in GRID_KEYS and len({str(f[k]) for f in flats}) > 1
        )
        if differ:
            notes.append(f"{group}: runs differ in {', '.join(differ)}")
        seeds = [r.seed for r in members]
        if len(set(seeds)) < len(seeds):
            notes.append(f"{group}: repeated seeds {sorted(seeds)}")
    return notes


def provenance(run: RunRecord) -> str:
    """One line saying where a run's numbers come from."""
    cfg, s = run.config, run.summary or {}
    state = f"{s['seconds']:.0f} s" if "seconds" in s else "UNFINISHED (no summary.json)"
    data = s.get("data") or cfg.data.name
    return (
        f"{run.name}: {run.group}, seed {run.seed}, {run.final_round} rounds, model "
        f"{cfg.model.name}, data {data} ({cfg.data.partition}, {cfg.data.num_clients} clients × "
        f"{cfg.data.examples_per_client}), {state}, {len(run.evals)} eval / "
        f"{len(run.attacks)} attack files — {run.path}"
    )


def make_figures(runs: list[RunRecord], out: Path) -> list[Figure]:
    """Draw every plot into ``out``."""
    label, _ = plots.utility_metric(runs, test_sets(runs))
    # (title, caption, draw into a path: the path, or None without data, file name)
    specs: list[tuple[str, str, Callable[[Path], Path | None], str]] = [
        (
            "Privacy–utility frontier over rounds",
            "Each curve runs from the base model (round 0) to the final model of one row, one "
            "point per round (mean over seeds): x = MIA AUC, y = held-out test loss. A method "
            "stopped early is a point on its curve; a curve to the left is less leaky at the "
            "same utility (see the matched-utility table for paired numbers).",
            lambda p: plots.plot_round_frontier(runs, p),
            "frontier_rounds.png",
        ),
        (
            "Utility per round",
            "Held-out test loss of the global model per round; mean ± std over seeds.",
            lambda p: plots.plot_test_loss(runs, p),
            "test_loss.png",
        ),
        (
            "Leakage per round",
            "Loss-based MIA AUC of the global model per round (round 0: the base model); "
            "canary log-probability where canaries were planted. Mean ± std over seeds.",
            lambda p: plots.plot_leakage(runs, p),
            "leakage.png",
        ),
        (
            "Privacy–utility frontier over β",
            f"x: MIA AUC of the final global model; y: {label}. FedPIT points per β, "
            "other methods as reference markers (the paper's Fig. 4b). Error bars: ± std.",
            lambda p: plots.plot_frontier(runs, test_sets(runs), p),
            "frontier.png",
        ),
        (
            "Synthetic data",
            "SynGen attempts, candidates kept after the filters and selected by IFS, and "
            "rejections by reason, per round, summed over clients (mean over seeds).",
            lambda p: plots.plot_synthetic(runs, p),
            "synthetic.png",
        ),
    ]
    figures = []
    for title, caption, draw, name in specs:
        drawn = draw(out / name)
        figures.append(Figure(title, caption, name if drawn else None))
    return figures


@dataclass(frozen=True)
class Page:
    """What the report shows, rendered once as HTML and once as Markdown."""

    figures: list[Figure]
    cols: list[Column]
    rows: list[list[str]]
    note: str
    warnings: list[str]
    paired: list[list[str]]  # the paired leakage table's cells (see report.paired)
    matched: list[list[str]]  # the matched-utility table's cells (see report.matched)
    prov: list[str]
    stamp: str


def render(runs: list[RunRecord], out: Path) -> tuple[Path, Path]:
    """Write the plots, ``report.html`` and ``report.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    cols = table_columns(runs)
    page = Page(
        figures=make_figures(runs, out),
        cols=cols,
        rows=table_rows(runs, cols),
        note=table_note(runs),
        warnings=mixed_rows(runs),
        paired=paired.table(paired.paired_rows(runs) + paired.control_rows(runs)),
        matched=matched.table(matched.matched_rows(runs)),
        prov=[provenance(r) for r in runs],
        stamp=time.strftime("%Y-%m-%d %H:%M"),
    )
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(_html(page))
    md_path.write_text(_markdown(page))
    return html_path, md_path


def table_note(runs: list[RunRecord]) -> str:
    """:data:`TABLE_NOTE`, plus the sampling error of the MIA AUCs in the table.

    The ± over seeds shows how training varies; every seed attacks the same examples, so
    it leaves out how much the AUC would move on other examples (Hanley–McNeil).
    """
    errors = [
        mia.auc_standard_error(a.mia_auc, a.n_members, a.n_non_members)
        for r in runs
        if (a := r.final_attack()) and a.mia_auc is not None and a.n_members and a.n_non_members
    ]
    if not errors:
        return TABLE_NOTE
    sizes = sorted({f"{a.n_members} vs {a.n_non_members}" for r in runs if (a := r.final_attack())})
    return (
        f"{TABLE_NOTE} Sampling error of one run's MIA AUC ({', '.join(sizes)} examples, "
        f"Hanley–McNeil): {min(errors):.3f}–{max(errors):.3f}; the ± over seeds does not "
        "include it (every seed attacks the same examples)."
    )


TITLE = "FedPIT report"
PAIRED_TITLE = "Leakage relative to FedAvg and the damped control (paired by seed, same examples)"
MATCHED_TITLE = "Leakage at matched utility (paired by seed, same examples)"
TABLE_NOTE = (
    "Final global model (test sets: utility; leakage: attacks on members vs non-members; "
    "loss gap: non-member minus member loss in nats/token; canary log-prob in nats, "
    "exposure in bits). "
    "Cells: mean ± sample std over seeds; — = not measured; (k/n) = k of n runs measured; "
    "judge WT 'unavailable' = the judge failed its sanity check. Base floor: extraction "
    "ROUGE-L of the base model on the same members."
)


def _html(page: Page) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{TITLE}</title><style>{CSS}</style></head><body>",
        f"<h1>{TITLE}</h1><p>{len(page.prov)} runs, generated {e(page.stamp)}.</p>",
    ]
    if page.matched:
        parts.append(f'<h2>{MATCHED_TITLE}</h2><div class="wide"><table><thead><tr>')
        parts.append("".join(f"<th>{e(h)}</th>" for h in matched.HEADER) + "</tr></thead>")
        parts += ["<tbody>", *(_html_row(row) for row in page.matched), "</tbody></table></div>"]
        parts.append(f"<p><small>{e(matched.NOTE)}</small></p>")
    parts += [
        "<h2>Results (Table 2 layout)</h2>",
        '<div class="wide"><table><thead><tr><th rowspan=2>method</th><th rowspan=2>runs</th>',
    ]
    sections: list[tuple[str, int]] = []
    for c in page.cols:
        if sections and sections[-1][0] == c.section:
            sections[-1] = (c.section, sections[-1][1] + 1)
        else:
            sections.append((c.section, 1))
    parts += [f"<th colspan={n}>{e(s)}</th>" for s, n in sections]
    parts.append("</tr><tr>" + "".join(f"<th>{e(c.label)}</th>" for c in page.cols))
    parts.append("</tr></thead><tbody>")
    parts += [_html_row(row) for row in page.rows]
    parts += ["</tbody></table></div>", f"<p><small>{e(page.note)}</small></p>"]
    parts += [f"<p><strong>Warning:</strong> {e(n)}</p>" for n in page.warnings]
    if page.paired:
        parts.append(f"<h2>{PAIRED_TITLE}</h2><table><thead><tr>")
        parts.append("".join(f"<th>{e(h)}</th>" for h in paired.HEADER) + "</tr></thead>")
        parts += ["<tbody>", *(_html_row(row) for row in page.paired), "</tbody></table>"]
        parts.append(f"<p><small>{e(paired.NOTE)}</small></p>")
    for fig in page.figures:
        parts.append(f"<h2>{e(fig.title)}</h2>")
        if fig.file:
            parts.append(
                f'<figure><img src="{e(fig.file)}" alt="{e(fig.title)}">'
                f"<figcaption>{e(fig.caption)}</figcaption></figure>"
            )
        else:
            parts.append("<p>No data for this plot in these runs.</p>")
    parts.append("<h2>Provenance</h2><ul>")
    parts += [f'<li class="prov">{e(line)}</li>' for line in page.prov]
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def _html_row(cells: list[str]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in cells) + "</tr>"


def _markdown(page: Page) -> str:
    header = ["method", "runs", *(f"{c.section} {c.label}" for c in page.cols)]
    md = [
        f"# {TITLE}",
        "",
        f"{len(page.prov)} runs, generated {page.stamp}.",
        "",
    ]
    if page.matched:
        md += [f"## {MATCHED_TITLE}", "", *_md_table(matched.HEADER, page.matched), ""]
        md += [matched.NOTE, ""]
    md += [
        "## Results (Table 2 layout)",
        "",
        *_md_table(header, page.rows),
        "",
        page.note,
        "",
    ]
    md += [f"**Warning:** {n}\n" for n in page.warnings]
    if page.paired:
        md += [f"## {PAIRED_TITLE}", "", *_md_table(paired.HEADER, page.paired), ""]
        md += [paired.NOTE, ""]
    for fig in page.figures:
        md += [f"## {fig.title}", ""]
        if fig.file:
            md += [f"![{fig.title}]({fig.file})", "", fig.caption, ""]
        else:
            md += ["No data for this plot in these runs.", ""]
    md += ["## Provenance", ""] + [f"- `{line}`" for line in page.prov]
    return "\n".join(md) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    return lines + ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
