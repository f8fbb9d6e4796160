"""Mutation testing of the functions that decide correctness, and its report.

    python scripts/mutation_report.py              # run mutmut, write mutation_report.md
    python scripts/mutation_report.py --report-only  # the report of the last run (mutants/)
    python scripts/mutation_report.py --list       # the targets and their functions; no run

mutmut (configured in pyproject.toml, [tool.mutmut]) copies the tree to mutants/, mutates each
target function there and runs the fast tests that call it. The run is niced and uses at most
--max-children workers (default 2): it is meant for a shared machine, on demand, not for CI.

Every surviving mutant is listed in the report with its diff and a verdict from
scripts/mutation_verdicts.toml: "killed by <test>" (a test added for it; the report checks that
the mutant is killed now), or why a survivor is harmless (an equivalent mutant, a bound nothing
can observe...). A survivor without a verdict is listed as UNEXPLAINED.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT / "scripts" / "mutation_verdicts.toml"
REPORT = ROOT / "mutation_report.md"
SEP = "ǁ"   # mutmut's separator in the mangled name of a method: xǁClassǁmethod

# {module file: functions ("name" or "Class.method", fnmatch patterns)}: the code whose every
# branch decides what is booked, refused, signalled or stopped. Lifecycle, stats and logging
# around it are left out.
TARGETS: dict[str, tuple[str, ...]] = {
    "processes/shared/protocol.py": ("*",),
    "processes/strategy/signals.py": ("*",),
    "processes/strategy/builtin.py": ("*",),
    "processes/strategy/api.py": ("check_submit", "StrategyConfig.*", "OrderReply.*"),
    "processes/strategy/host.py": (
        "StrategyHost.position", "StrategyHost.submit", "StrategyHost._refuse",
        "StrategyHost._side", "StrategyHost._start_backoff", "StrategyHost._end_backoff",
        "StrategyHost._on_reply"),
    "processes/order_manager/service.py": (
        "_says_hello", "parse_record", "OrderLog.append", "OrderLog._read_back",
        "OrderManager._replay", "OrderManager.toggle_kill_switch", "OrderManager._on_frame",
        "OrderManager._on_hello", "OrderManager._implicit_hello", "OrderManager._on_order",
        "OrderManager._risk", "OrderManager._write", "OrderManager._malformed",
        "OrderManager._reject_rule", "OrderManager._reject"),
    "processes/supervisor/stack.py": (
        "describe_exit", "describe_exits", "Stack.stop", "Supervisor.teardown"),
    "processes/supervisor/supervision.py": ("*",),
}


def functions_of(path: Path) -> list[str]:
    """Top-level functions and class methods of a module, as "name" / "Class.method"."""
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(node.name)
        elif isinstance(node, ast.ClassDef):
            out += [f"{node.name}.{m.name}" for m in node.body
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mangled(module: str, function: str) -> str:
    """mutmut's name of a function's mutants, less the "__mutmut_N" tail."""
    cls, _, name = function.rpartition(".")
    return f"{module}.x{SEP}{cls}{SEP}{name}" if cls else f"{module}.x_{name}"


def target_functions(root: Path = ROOT) -> dict[str, list[str]]:
    """{module path: the functions its TARGETS patterns match}; ValueError names a pattern
    that matches nothing (a renamed function must not drop out of the run unnoticed)."""
    out = {}
    for path, patterns in TARGETS.items():
        found = functions_of(root / path)
        chosen = []
        for pattern in patterns:
            hits = fnmatch.filter(found, pattern)
            if not hits:
                raise ValueError(f"{path}: no function matches {pattern!r}")
            chosen += [f for f in hits if f not in chosen]
        out[path] = chosen
    return out


def mutant_globs(targets: dict[str, list[str]]) -> list[str]:
    return [f"{mangled(module_of(path), fn)}__mutmut_*"
            for path, fns in targets.items() for fn in fns]


# --- the run -------------------------------------------------------------------------------------
def run_mutmut(globs: list[str], max_children: int) -> float:
    """One mutmut run over `globs`, niced; its wall time in seconds."""
    mutmut = shutil.which("mutmut")
    if mutmut is None:
        sys.exit("mutmut is not installed: pip install 'mutmut>=3.8'")
    cmd = [mutmut, "run", "--max-children", str(max_children), *globs]
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)   # a fresh copy of the tree and config
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, preexec_fn=lambda: os.nice(10), check=False)
    if proc.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {proc.returncode}")
    return time.monotonic() - t0


def results() -> dict[str, str]:
    """{mutant: status} of the last run, every status (killed too)."""
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            found[name] = status
    return found


def diff_of(mutant: str) -> str:
    out = subprocess.run(["mutmut", "show", mutant], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    lines = out.splitlines()
    start = next((i for i, x in enumerate(lines) if x.startswith("---")), 0)
    return "\n".join(lines[start:])


def changed_line(diff: str) -> int | None:
    """The source line number of the first removed line of a unified diff."""
    line = None
    for text in diff.splitlines():
        if m := re.match(r"@@ -(\d+)", text):
            line = int(m[1])
        elif line is not None:
            if text.startswith("-") and not text.startswith("---"):
                return line
            if not text.startswith("+"):
                line += 1
    return None


# --- verdicts ------------------------------------------------------------------------------------
@dataclass
class Verdict:
    mutants: str          # fnmatch pattern over mutant names
    why: str = ""         # why a survivor is harmless
    killed_by: str = ""   # the test written to kill it
    contains: str = ""    # only mutants whose diff adds a line containing this


def load_verdicts(path: Path = VERDICTS) -> list[Verdict]:
    raw = tomllib.loads(path.read_text())
    verdicts = [Verdict(**v) for v in raw.get("verdict", [])]
    for v in verdicts:
        if bool(v.why) == bool(v.killed_by):
            raise ValueError(f"{path}: {v.mutants}: give either why or killed_by")
    return verdicts


def verdict_for(mutant: str, diff: str, verdicts: list[Verdict]) -> Verdict | None:
    added = "\n".join(x for x in diff.splitlines() if x.startswith("+"))
    for v in verdicts:
        if fnmatch.fnmatchcase(mutant, v.mutants) and (not v.contains or v.contains in added):
            return v
    return None


def short(mutant: str) -> str:
    return mutant.replace(f"x{SEP}", "").replace(SEP, ".").replace(".x_", ".")


def write_report(statuses: dict[str, str], verdicts: list[Verdict], wall_s: float | None,
                 max_children: int, out: Path) -> tuple[int, int]:
    """mutation_report.md; (survivors, of them unexplained)."""
    from importlib.metadata import version

    targets = target_functions()
    globs = mutant_globs(targets)
    mine = {m: s for m, s in statuses.items() if any(fnmatch.fnmatchcase(m, g) for g in globs)}
    counts: dict[str, int] = {}
    for s in mine.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = sorted(m for m, s in mine.items() if s == "survived")
    claimed = [(v, m) for v in verdicts if v.killed_by
               for m in sorted(fnmatch.filter(mine, v.mutants))]
    lines = [
        "# Mutation report",
        "",
        "Generated by `python scripts/mutation_report.py` (mutmut "
        f"{version('mutmut')}, configured in pyproject.toml `[tool.mutmut]`); do not edit by "
        "hand. Verdicts live in `scripts/mutation_verdicts.toml`.",
        "",
        "Mutated: the functions listed below (scripts/mutation_report.py, TARGETS), log lines "
        "excepted. Each mutant runs against the in-process tests that call its function.",
        "",
        "| status | mutants |",
        "|---|---|",
        *[f"| {s} | {n} |" for s, n in sorted(counts.items())],
        f"| **total** | {len(mine)} |",
        "",
    ]
    if wall_s is not None:
        lines += [f"Run time: {wall_s / 60:.1f} min with --max-children {max_children}.", ""]
    lines += ["## Targets", ""]
    lines += [f"- `{path}`: {', '.join(f'`{f}`' for f in fns)}" for path, fns in targets.items()]
    lines += ["", "## Killed by tests written for them", "",
              "Mutants that survived the tests as they were; each is killed now by the test named.",
              "", "| mutant | status now | killed by |", "|---|---|---|"]
    for v, m in claimed:
        lines.append(f"| `{short(m)}` | {mine[m]} | `{v.killed_by}` |")
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    unexplained = 0
    for m in survivors:
        diff = diff_of(m)
        v = verdict_for(m, diff, verdicts)
        if v is None:
            why = "**UNEXPLAINED**"
            unexplained += 1
        elif v.killed_by:
            why = f"**STILL SURVIVES** although `{v.killed_by}` is meant to kill it"
            unexplained += 1
        else:
            why = v.why
        path = m.split(".x")[0].replace(".", "/") + ".py"
        lines += [f"### `{short(m)}` ({path}:{changed_line(diff)})", "", why, "",
                  "```diff", diff, "```", ""]
    out.write_text("\n".join(lines))
    return len(survivors), unexplained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-children", type=int, default=2,
                        help="parallel mutmut workers (default 2: the machine is shared)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the last run's results in mutants/")
    parser.add_argument("--list", action="store_true",
                        help="print each target module's functions and mutant glob; no run")
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    try:
        targets = target_functions()
        verdicts = load_verdicts()
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for path, fns in targets.items():
            print(f"{path}: {', '.join(fns)}")
        print(f"{len(mutant_globs(targets))} mutant globs, {len(verdicts)} verdicts")
        return 0
    wall = None if args.report_only else run_mutmut(mutant_globs(targets), args.max_children)
    survivors, unexplained = write_report(results(), verdicts, wall, args.max_children, args.output)
    print(f"{args.output}: {survivors} surviving mutants, {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
