"""Run the study's notebooks in order, headless, and regenerate the README's results.

``python -m clp_utils.machinery.pipeline --profile cpu`` executes ``notebooks/NN_*.ipynb``
with papermill (the repository root as working directory) into ``results/notebooks/<profile>/``,
its figures and tables going to the profile's folder (``paths.figures_dir``) with ``run.json``
(each chapter's wall time, the setup time, and what ran). It then writes the reproduction
report (``clp_utils.machinery.report``; quick is read against cpu) and rewrites the README's
generated results section from the figure folders (never for smoke or quick).

``$CLP_RESULTS_DIR`` and ``$CLP_FIGURES_DIR`` are read here only and reach the chapters as
their ``results_dir`` and ``figures_dir`` parameters. On a GPU, ``--parallel N`` first trains
the profile's runs N at a time (``parallel.train_parallel``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import sentence_transformers
import torch

from clp_utils.base.io import atomic_write, write_json
from clp_utils.base.paths import (
    FIGURES_ROOT,
    REPO_ROOT,
    configure,
    figures_dir,
    from_environment,
    results_dir,
)
from clp_utils.base.precision import decide
from clp_utils.catalog import data_record
from clp_utils.claims import framing_sentence
from clp_utils.geometry import DESCRIPTIVE, NOT_RUN
from clp_utils.machinery import report
from clp_utils.machinery.parallel import train_parallel
from clp_utils.machinery.publish import export_results, publish_chapters
from clp_utils.profiles import NAMES, get_profile
from clp_utils.recipe import RECIPE_PATH, Recipe
from clp_utils.stats import VERDICTS
from clp_utils.study import run_study, training_table

NOTEBOOKS = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
RUN_RECORD = "run.json"

#: Tables shown in the README, in order, when they exist (chapter prefix, caption).
README_TABLES = [
    ("00_baselines_ndcg10", "Zero-shot baselines (chapter 00)"),
    ("01_false_negatives", "False negatives by mining strategy (chapter 01)"),
    ("03_validation",
     "How the cpu profile was sized: the choices made on validation queries (chapter 03; "
     "tau, lambda, batch size, the ANCE window and the split were fixed beforehand)"),
    ("03_false_in_batch_negatives",
     "False in-batch negatives, plain vs no-duplicate batches (chapter 03)"),
    ("04_table2", "The paper's Table 2, rebuilt (chapter 04)"),
    ("04_claims", "Which of the paper's claims held, on nDCG@5 (the paper's metric) and "
     "nDCG@10 (chapter 04)"),
    ("04_power", "What this design could detect: the smallest effect at 80% power beside the "
     "paper's step (chapter 04)"),
    ("04_gradient_shares", "Why CLP's pull is weak: its gradient on real batches (chapter 04)"),
    ("04_hybrid_reddit", "What to deploy: BM25, dense and hybrids on reddit (chapter 04)"),
    ("04_hybrid_amazon", "What to deploy: BM25, dense and hybrids on amazon (chapter 04)"),
    ("04_forgetting", "Out-of-domain forgetting (chapter 04)"),
    ("05_own_query_retrieval",
     "The mechanism: do the negatives' own queries still find them? (chapter 05)"),
    ("06_multilingual", "Multilingual track (chapter 06)"),
]
#: The cpu profile confined to AVX2 kernels (``make study-avx2``), shown below the others.
AVX2_TABLES = [
    ("04_table2", "Table 2 on AVX2 kernels only"),
    ("04_claims", "The claims on AVX2 kernels only"),
]
#: The full profile's tables shown beside the cpu profile's (from ``figures/full/``).
FULL_TABLES = [
    ("04_table2", "The full profile's Table 2"),
    ("04_claims", "The full profile's claims"),
    ("04_hybrid_reddit", "The full profile's hybrids on reddit"),
]
#: The chapters the extras profile runs (its controls train in 03, are tested in 04 and 05).
EXTRAS_CHAPTERS = ["03", "04", "05"]
#: The extras' tables shown in the README (from ``figures/extras/``).
EXTRAS_TABLES = [
    ("04_claims_controls", "The controls and checks (`make study-extras`)"),
    ("04_claims_2x2", "The 2x2 of policy by learning rate (`make study-extras`)"),
    ("05_harm_gaps", "The harm with its control and placebo, lambda 0.5 included (one Holm "
     "family)"),
]


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in order, optionally only those whose number is in ``only``."""
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not only or p.name[:2] in only]


def run_notebooks(profile: str, only: list[str] | None = None, out_dir: Path | None = None,
                  parameters: dict | None = None, figures: Path | None = None) -> dict[str, float]:
    """Execute the notebooks with papermill; returns ``{notebook: seconds}``, with ``only``
    including the other notebooks' last times (``timings.json``). The kernels get this
    process's results root and ``figures`` (default: the profile's folder) as parameters."""
    out_dir = out_dir or results_dir() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = {"figures_dir": str(figures or figures_dir(profile)),
               "results_dir": str(results_dir())}
    last = out_dir / "timings.json"
    timings = json.loads(last.read_text()) if only and last.exists() else {}
    for nb in notebooks(only):
        t0 = time.perf_counter()
        print(f"[{profile}] running {nb.name}", flush=True)
        # the smoke chain runs every "Try this" exercise, so none rots
        defaults = {"profile": profile, "run_exercises": profile == "smoke", **folders}
        if "train" in pm.inspect_notebook(str(nb)):  # a chapter that trains: make study does
            defaults["train"] = True
        pm.execute_notebook(
            str(nb), str(out_dir / nb.name), parameters={**defaults, **(parameters or {})},
            kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False,
        )
        timings[nb.name] = round(time.perf_counter() - t0, 1)
        print(f"[{profile}] {nb.name} done in {timings[nb.name]:.0f} s", flush=True)
        write_json(last, dict(sorted(timings.items())))
    return timings


#: What trains every run and how verdicts are read, as ``run.json`` records them: the
#: reproduction report names a change of either as a cause of moved numbers.
TRAINER = f"SentenceTransformerTrainer (sentence-transformers {sentence_transformers.__version__})"
STATISTICS = ("passages by bootstrap, seeds as a Student-t term, a declared seed component for "
              "one seed; margins per claim (the paper's step); nDCG@5 and nDCG@10")


def record_machine(setup_seconds: float | None = None) -> dict:
    """What runs here: the precision ``"auto"`` picks, its hardware, and the setup time
    (venv and data) before the chapters when ``make`` passed its start time."""
    p = decide("auto", "cuda" if torch.cuda.is_available() else "cpu")
    info = {"describe": p.describe(), "precision": p.record(), "trainer": TRAINER,
            "statistics": STATISTICS}
    if setup_seconds is not None:
        info["setup_seconds"] = round(setup_seconds, 1)
    return info


def declared_seeds(profile: str) -> dict:
    """The seeds per row ``profile`` declares (the same on every machine), for ``run.json``."""
    seeds = get_profile(profile).study.seeds
    return {"seeds": len(seeds), "reason": f"declared by the {profile} profile: {list(seeds)}"}


def training_record(profile: str, multilingual: bool = True) -> dict:
    """The runs, training seconds (summed from their logs) and threads of the profile's runs
    (with ``multilingual``, the Hindi track's too); empty when some run is missing here."""
    track = get_profile(profile).track if multilingual else None
    studies = [profile] + ([track.study] if track is not None else [])
    try:
        table = pd.concat([training_table(run_study(s, train=False, progress=False))
                           for s in studies])
    except SystemExit:
        return {}
    return {"runs": len(table), "seconds": round(float(table["training seconds"].sum()), 1),
            "threads": sorted({int(t) for t in table["threads"].dropna()})}


def timing_line(timings: dict[str, float], machine: dict | None = None) -> str:
    """The README's generated timing line: per notebook, setup, total, and what ran."""
    total = sum(timings.values())
    parts = [f"`{k}` {v / 60:.1f} min" for k, v in timings.items()]
    if machine and machine.get("parallel"):
        par = machine["parallel"]
        parts.insert(0, f"training {par['workers']} runs at a time {par['seconds'] / 60:.1f} min")
        total += par["seconds"]
    if machine and machine.get("setup_seconds") is not None:
        parts.insert(0, f"setup (venv, data) {machine['setup_seconds'] / 60:.1f} min")
        total += machine["setup_seconds"]
    line = "Wall time of the last run: " + ", ".join(parts) + f"; total {total / 60:.0f} min"
    if machine:
        seeds = (machine.get("seeds") or {}).get("seeds")
        per_row = f", {seeds} seed{'s' if seeds != 1 else ''} per row" if seeds else ""
        line += f" ({machine['describe']}{per_row})"
    training = report.training_sentence((machine or {}).get("training", {}))
    return line + "." + (f" {training}" if training else "")


def run_record(profile: str, timings: dict[str, float], machine: dict, previous: dict,
               only: list[str] | None = None) -> dict:
    """What ``run.json`` keeps of a run: its chapter times and what ran. After chapters
    re-run with ``--only``, the whole run's times stay (what ``make study`` costs) and the
    re-run chapters' times go under ``reopened``."""
    if not only or not previous.get("timings"):
        return {"profile": profile, "timings": timings, "machine": machine}
    again = {**(previous.get("reopened") or {}).get("timings", {}),
             **{k: v for k, v in timings.items() if k[:2] in only}}
    return {**previous, "reopened": {"timings": dict(sorted(again.items())),
                                     "describe": machine["describe"]}}


def stale_verdicts(csv_path: Path) -> bool:
    """Whether a table's verdicts fall outside the present vocabulary (``stats.VERDICTS``, and
    the harm family's rows that are not claims): made by earlier statistics."""
    table = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame()
    return "verdict" in table and not set(table["verdict"].dropna()) <= {
        *VERDICTS, NOT_RUN, DESCRIPTIVE}


def _tables(folder: Path, tables: list[tuple[str, str]], heading: str = "###",
            command: str = "make study") -> list[str]:
    parts = []
    for name, caption in tables:
        path = folder / f"{name}.md"
        if not path.exists():
            continue
        if stale_verdicts(path.with_suffix(".csv")):
            parts += [f"{heading} {caption}", "",
                      f"Not shown: `{path.relative_to(folder.parent)}` was made by an earlier "
                      "version of the statistics (per-query tests and a t-test over seeds, "
                      "before the two-level intervals and equivalence verdicts); "
                      f"`{command}` remakes it.", ""]
            continue
        parts += [f"{heading} {caption}", "", path.read_text().strip(), ""]
    return parts


def _run_line(folder: Path) -> list[str]:
    record = folder / RUN_RECORD
    if not record.exists():
        return []
    run = json.loads(record.read_text())
    lines = [timing_line(run["timings"], run.get("machine")), ""]
    stale = report.stale_data(run)
    if stale:
        files = sorted({source.split(":")[0] for source in stale.values()})
        lines += [f"These numbers were made from earlier copies of the data ({', '.join(stale)}: "
                  f"{', '.join(files)}), not from the sources now committed in `data/sources/`; "
                  "the next run of this profile remakes them from those.", ""]
    if run.get("reopened"):
        again = run["reopened"]["timings"]
        lines += ["Chapters re-run afterwards with the stored runs (nothing trains): "
                  + ", ".join(f"`{k}` {v / 60:.1f} min" for k, v in again.items()) + ".", ""]
    return lines


def _other_run(folder: Path, title: str, tables: list[tuple[str, str]],
               intro: str | None = None, command: str = "make study") -> list[str]:
    """A run kept in a sub-folder of figures/: heading, optional sentence, tables and timing
    line; nothing when none of its tables exist."""
    shown = _tables(folder, tables, heading="####", command=command)
    if not shown:
        return []
    return [f"### {title}", ""] + ([intro, ""] if intro else []) + shown + _run_line(folder)


def _design_line(recipe_path: Path) -> list[str]:
    if not recipe_path.exists():
        return []
    recipe = Recipe.load(recipe_path)
    machine = recipe.machine
    return [f"The cpu profile's recipe ({recipe.train_queries} training queries per run, "
            f"{recipe.num_negatives} negative(s), {recipe.max_passage_len}-token training "
            f"passages, learning rates {recipe.lr}) was chosen by `make design` in "
            f"{recipe.design_minutes or float('nan'):.0f} min "
            f"({machine.get('precision', '?')} on "
            f"{machine.get('hardware', {}).get('cpu', '?')}, "
            f"CPU capability {machine.get('hardware', {}).get('capability', '?')}).", ""]


def results_markdown(figures: Path = FIGURES_ROOT,
                     timings: dict[str, float] | None = None,
                     machine: dict | None = None,
                     recipe_path: Path = RECIPE_PATH) -> str:
    """The README's results section, from the files in ``figures`` (the repository's,
    whatever ``$CLP_FIGURES_DIR`` says) and its extras, full and avx2 sub-folders.
    ``timings`` and ``machine`` override the cpu profile's ``run.json``."""
    parts = [START, "", "_Generated by `make study` from `figures/`; do not edit by hand._", "",
             f"**What this study tests.** {framing_sentence()}", ""]
    parts += _tables(figures, README_TABLES)
    parts += [timing_line(timings, machine), ""] if timings else _run_line(figures)
    parts += _design_line(recipe_path)
    parts += _other_run(figures / "extras",
                        "The controls and checks a reviewer asks for (`make study-extras`)",
                        EXTRAS_TABLES,
                        "The extras profile: the cpu recipe, two seeds per control and per cell "
                        "of the 2x2 of policy by learning rate, the scale check on every "
                        "training query (ANCE and ANCE + CLP with two seeds, intermediate-only "
                        "with one), beside the cpu runs they are compared with. Chapter 04 "
                        "reads each paper claim with its controls.",
                        command="make study-extras")
    parts += _other_run(figures / "full", "The full profile (GPU), beside the cpu profile",
                        FULL_TABLES, command="make study PROFILE=full")
    parts += _other_run(figures / "avx2",
                        "The cpu profile on a CPU without native bf16 (`make study-avx2`)",
                        AVX2_TABLES,
                        "The same recipe with PyTorch, oneDNN and MKL confined to AVX2 kernels: "
                        "float32 (a CPU with native bf16 still reports its flags in the line "
                        "below; the timed check finds bf16 slower there), with the cpu profile's "
                        "two seeds.", command="make study-avx2")
    parts.append(END)
    return "\n".join(parts)


def update_readme(timings: dict[str, float] | None = None, readme: Path = README,
                  machine: dict | None = None) -> None:
    """Replace the text between the results markers of the README (atomically)."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: markers {START} / {END} not found")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END),
                 lambda _: results_markdown(timings=timings, machine=machine), text, flags=re.S)
    with atomic_write(readme) as fh:
        fh.write(new)


def reproduce(profile: str, folder: Path, committed: Path, then_record: dict | None,
              now_record: dict | None, keep: bool = True) -> str:
    """Compare the regenerated headline numbers with the committed snapshot, write the report
    to ``results/reproduction/<profile>/`` (with ``keep``, cpu and extras also beside their
    committed figures, unless the run moved nothing: ``report.moved``), print it and return
    its summary."""
    table = report.compare(committed, folder, then_record, now_record)
    path = report.write(table, results_dir() / "reproduction" / profile)
    if (keep and report.moved(table) and folder.is_relative_to(FIGURES_ROOT)
            and profile in ("cpu", "extras")):
        # committed with the figures it checks; a run that only confirms them leaves the
        # report that says why they are what they are (the last run that moved them)
        report.write(table, folder / "reproduction")
    text = report.summary(table)
    print(f"[{profile}] reproduction report ({path}):\n{text}", flush=True)
    return text


#: The teacher's page's chapter times measured apart from ``make study`` (``--reopen``,
#: ``--profile smoke --record-timings``), one ``<kind>-<precision>.json`` each.
TIMINGS = FIGURES_ROOT / "timings"


def record_timings(kind: str, timings: dict[str, float], stopped: dict | None = None) -> Path:
    """Write ``TIMINGS/<kind>-<precision>.json``: the chapter times and the machine."""
    machine = record_machine()
    path = TIMINGS / f"{kind}-{machine['precision']['precision']}.json"
    write_json(path, {"machine": machine["describe"], "timings": dict(sorted(timings.items())),
                      "stopped": stopped or {}})
    return path


def reopen_chapters(only: list[str] | None = None) -> dict[str, float]:
    """Every chapter as a reader's clone opens it (its own parameters, an empty results
    folder: only committed results are read, nothing trains, figures go under
    ``results/reopen``); a chapter stopping for what is not committed is timed to its stop.
    Writes ``TIMINGS/reopen-<precision>.json``."""
    root = results_dir() / "reopen"
    store, out = root / "store", root / "notebooks"
    shutil.rmtree(root, ignore_errors=True)  # empty, as a clone's: no cache from a rerun
    out.mkdir(parents=True)
    timings, stopped = {}, {}
    for nb in notebooks(only):
        t0 = time.perf_counter()
        print(f"[reopen] {nb.name}", flush=True)
        try:
            pm.execute_notebook(str(nb), str(out / nb.name), kernel_name="python3",
                                cwd=str(REPO_ROOT), progress_bar=False,
                                parameters={"results_dir": str(store),
                                            "figures_dir": str(root / "figures")})
        except pm.PapermillExecutionError as err:
            if err.ename != "SystemExit":
                raise
            # the chapter's own reason, its last line (what asks for training), for a table cell
            lines = (err.evalue or "").strip().splitlines()
            stopped[nb.name] = lines[-1] if lines else "stopped"
        timings[nb.name] = round(time.perf_counter() - t0, 1)
    print(f"[reopen] wrote {record_timings('reopen', timings, stopped)}", flush=True)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clp_utils.machinery.pipeline",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=list(NAMES))
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 00 03")
    parser.add_argument("--readme-only", action="store_true",
                        help="only regenerate the README section")
    parser.add_argument("--parallel", type=int, default=1,
                        help="train the profile's runs N processes at a time first (a GPU)")
    parser.add_argument("--started", type=float, default=None,
                        help="epoch seconds when `make` started (the setup time is recorded)")
    parser.add_argument("--reopen", action="store_true",
                        help="open every chapter on the committed results (train = False) "
                        "and record the times (figures/timings/)")
    parser.add_argument("--record-timings", action="store_true",
                        help="keep this run's chapter times in figures/timings/ (smoke)")
    args = parser.parse_args(argv)
    only = args.only or (EXTRAS_CHAPTERS if args.profile == "extras" else None)
    partial = bool(args.only)  # the extras' own chapter list is a whole run of that profile
    settings = from_environment()  # the command line's edge: the tests, make study-avx2
    configure(results=settings["results"], cache=settings["cache"], bf16=settings["bf16"])
    if args.reopen:
        reopen_chapters(args.only)
        return
    folder = figures_dir(args.profile, settings["figures"])
    record = folder / RUN_RECORD
    if not args.readme_only:
        previous = json.loads(record.read_text()) if record.exists() and partial else {}
        # quick is the cpu profile with one seed: its numbers are read against the cpu's
        reference = figures_dir("cpu") if args.profile == "quick" else folder
        committed = report.snapshot(reference, results_dir() / "reproduction" / args.profile
                                    / "committed")
        then_record = report.read_record(committed)
        setup = time.time() - args.started if args.started and not partial else None
        machine = record_machine(setup)
        print(f"[{args.profile}] precision: {machine['describe']}", flush=True)
        if machine["precision"]["device"] == "cpu" and not machine["precision"]["bf16"]:
            print(f"[{args.profile}] no native bf16 on this CPU: training and encoding run in "
                  "float32, slower than where AVX512-BF16 or AMX exist (bench/bf16_check.py "
                  "measures the ratio)", flush=True)
        machine["seeds"] = declared_seeds(args.profile)
        if setup is None and previous.get("machine", {}).get("setup_seconds") is not None:
            machine["setup_seconds"] = previous["machine"]["setup_seconds"]  # the full run's
        if args.parallel > 1:
            t0 = time.perf_counter()
            train_parallel(args.profile, args.parallel)
            machine["parallel"] = {"workers": args.parallel,
                                   "seconds": round(time.perf_counter() - t0, 1)}
        timings = run_notebooks(args.profile, only, figures=folder)
        if not partial and args.profile != "smoke":  # kept in run.json only by these runs
            machine["training"] = training_record(
                args.profile, multilingual=any(nb.name.startswith("06") for nb in notebooks(only)))
        if args.record_timings:
            record_timings(args.profile, timings)
        now_record = run_record(args.profile, timings, machine, previous,
                                only if partial else None)
        now_record["data"] = data_record()
        if args.profile != "smoke":
            write_json(record, now_record)
        if args.profile in ("cpu", "extras") and settings["figures"] is None:
            # the committed study: its small results, and (cpu) its executed chapters, whose
            # cards read the record just written
            export_results()
            if args.profile == "cpu":
                publish_chapters(results_dir() / "notebooks" / args.profile, only)
        # a chapter re-run with --only compares with the run just before it, not with the
        # committed one: the committed report stays the whole run's
        reproduce(args.profile, folder, committed, then_record, now_record, keep=not partial)
    if args.profile not in ("smoke", "quick"):
        update_readme()


if __name__ == "__main__":
    main()
