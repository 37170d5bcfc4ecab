"""Mutation score of dnstrace's pure core: cosmic-ray over each module, fast tests only.

Run through ``scripts/dev mutate [MODULE...]`` (or directly with the venv's python).
For each module listed in scripts/mutation.toml (or named on the command line):

1. copy ``src/`` into a private tree, so the working tree is never touched and an
   interrupted run leaves nothing mutated behind;
2. ``cosmic-ray init`` + the operators filter + ``cosmic-ray exec``, with the tests
   run from the repository against the copy (``PYTHONPATH`` puts it first);
3. read the session, drop mutants listed in scripts/mutation-equivalent.txt and
   print the score per module and every surviving mutant.

Exit status: 0 when every module reaches the goal, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "mutation.toml"
EQUIVALENT = ROOT / "scripts" / "mutation-equivalent.txt"


@dataclass(frozen=True)
class Equivalent:
    """One line of mutation-equivalent.txt: ``module | source line | mutated line | reason``."""

    module: str
    line: str
    mutated: str
    reason: str


@dataclass
class Survivor:
    module: str
    operator: str
    lineno: int
    line: str
    diff: str


@dataclass
class ModuleScore:
    module: str
    total: int = 0
    killed: int = 0
    equivalent: int = 0
    incompetent: int = 0
    survivors: list[Survivor] = field(default_factory=list)
    error: str = ""

    @property
    def scored(self) -> int:
        return self.total - self.equivalent

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.scored if self.scored else 100.0


def load_equivalents(path: Path = EQUIVALENT) -> list[Equivalent]:
    found = []
    for number, raw in enumerate(path.read_text().splitlines(), 1) if path.exists() else ():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in raw.split(" | ")]
        if len(parts) != 4 or not all(parts):
            sys.exit(f"mutate: {path.name}:{number}: want 'module | source line | mutated line | reason'")
        found.append(Equivalent(*parts))
    return found


def mutated_line(diff: str) -> str:
    """The first added line of a cosmic-ray diff, stripped."""
    for d in diff.splitlines():
        if d.startswith("+") and not d.startswith("+++"):
            return d[1:].strip()
    return ""


def is_equivalent(module: str, line: str, diff: str, equivalents: list[Equivalent]) -> bool:
    mutated = mutated_line(diff)
    return any(e.module == module and e.line == line.strip() and e.mutated == mutated for e in equivalents)


def build_copy(workdir: Path) -> Path:
    """The package tree as installed, copied from the working tree (no caches)."""
    src = workdir / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


def cosmic_config(module_copy: Path, tests: list[str], settings: dict) -> str:
    # -P: no current directory on sys.path, or the working tree's dnstrace/ would shadow the copy.
    test_command = " ".join([sys.executable, "-P", "-m", "pytest", *settings["pytest-args"], *tests])
    excluded = ", ".join(f"'{op}'" for op in settings["exclude-operators"])
    return (
        "[cosmic-ray]\n"
        f"module-path = '{module_copy}'\n"
        f"timeout = {float(settings['timeout'])}\n"
        "excluded-modules = []\n"
        f"test-command = '{test_command}'\n"
        "[cosmic-ray.distributor]\nname = 'local'\n"
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = [{excluded}]\n"
    )


def run_module(module: str, tests: list[str], settings: dict, equivalents: list[Equivalent],
               keep: bool) -> ModuleScore:
    score = ModuleScore(module)
    workdir = Path(tempfile.mkdtemp(prefix="dnstrace-mutate-"))
    try:
        src = build_copy(workdir)
        module_copy = src / Path(module).relative_to("src")
        config = workdir / "cosmic-ray.toml"
        config.write_text(cosmic_config(module_copy, tests, settings))
        session = workdir / "session.sqlite"
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT / 'tests'}",
               "PYTHONDONTWRITEBYTECODE": "1"}
        bindir = Path(sys.executable).parent
        steps = ([bindir / "cosmic-ray", "init", config, session],
                 [bindir / "cr-filter-operators", session, config],
                 None,  # skip mutants of annotations before running anything
                 [bindir / "cosmic-ray", "baseline", config],
                 [bindir / "cosmic-ray", "exec", config, session])
        for argv in steps:
            if argv is None:
                skip_annotations(session, module_copy)
                continue
            done = subprocess.run([str(a) for a in argv], cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                score.error = f"{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''} failed: " \
                              f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}"
                return score
        collect(score, session, module_copy, equivalents)
        return score
    finally:
        if keep:
            print(f"mutate: {module}: session kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


Span = tuple[tuple[int, int], tuple[int, int]]


def annotation_spans(source: str) -> list[Span]:
    """Where the type annotations are: mutating one changes nothing at run time
    (every module has ``from __future__ import annotations``)."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found = [node.returns]
        elif isinstance(node, (ast.arg, ast.AnnAssign)):
            found = [node.annotation]
        else:
            continue
        spans += [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in found if a is not None]
    return spans


def in_spans(start: tuple[int, int], end: tuple[int, int], spans: list[Span]) -> bool:
    return any(lo <= tuple(start) and tuple(end) <= hi for lo, hi in spans)


def skip_annotations(session: Path, module_copy: Path) -> None:
    """Mark mutants inside type annotations as skipped: they are not mutants of behaviour."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = annotation_spans(module_copy.read_text())
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            mutation = item.mutations[0]
            if in_spans(mutation.start_pos, mutation.end_pos, spans):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="annotation"))


def collect(score: ModuleScore, session: Path, module_copy: Path, equivalents: list[Equivalent]) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    lines = module_copy.read_text().splitlines()
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue  # a filtered operator or an annotation: not a mutant at all
            mutation = item.mutations[0]
            lineno = mutation.start_pos[0]
            line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
            score.total += 1
            if result.test_outcome == TestOutcome.SURVIVED and \
                    is_equivalent(score.module, line, result.diff or "", equivalents):
                score.equivalent += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                score.survivors.append(Survivor(score.module, mutation.operator_name, lineno,
                                                line.strip(), result.diff or ""))
            else:
                # killed, a timeout, or incompetent (the mutant does not even import)
                score.killed += 1
                if result.test_outcome == TestOutcome.INCOMPETENT:
                    score.incompetent += 1


def report(scores: list[ModuleScore], goal: float) -> bool:
    all_ok = True
    for s in scores:
        for sv in s.survivors:
            print(f"SURVIVED {sv.module}:{sv.lineno} {sv.operator}\n    - {sv.line}\n    + {mutated_line(sv.diff)}")
    print()
    print(f"{'module':<22} {'mutants':>7} {'equiv':>5} {'killed':>6} {'survived':>8} {'score':>7}")
    for s in scores:
        if s.error:
            print(f"{s.module:<22} ERROR {s.error}")
            all_ok = False
            continue
        ok = s.percent >= goal
        all_ok &= ok
        print(f"{s.module:<22} {s.total:>7} {s.equivalent:>5} {s.killed:>6} {len(s.survivors):>8} "
              f"{s.percent:>6.1f}% {'ok' if ok else f'below {goal:.0f}%'}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev mutate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help="module paths as in scripts/mutation.toml, e.g. src/dnstrace/signals/dns/parse.py (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="modules mutated at once (default 1; each runs one test process)")
    parser.add_argument("--keep", action="store_true", help="keep each module's cosmic-ray session directory")
    parser.add_argument("--config", type=Path, default=CONFIG, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = tomllib.loads(args.config.read_text())
    modules: dict[str, dict] = settings["modules"]
    unknown = [m for m in args.modules if m not in modules]
    if unknown:
        print(f"mutate: unknown module(s) {', '.join(unknown)}; known: {', '.join(modules)}", file=sys.stderr)
        return 2
    chosen = args.modules or list(modules)
    equivalents = load_equivalents()
    missing = [t for m in chosen for t in modules[m]["tests"] if not (ROOT / t).exists()]
    if missing:
        print(f"mutate: test files missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(f"mutate: {len(chosen)} module(s), {args.jobs} at a time; this takes minutes per module", file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        scores = list(pool.map(lambda m: run_module(m, modules[m]["tests"], settings, equivalents, args.keep),
                               chosen))
    return 0 if report(scores, float(settings["goal"])) else 1


if __name__ == "__main__":
    sys.exit(main())
