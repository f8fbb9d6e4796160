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
import contextlib
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT / "scripts" / "mutation_verdicts.toml"
BASELINE = ROOT / "scripts" / "mutation_baseline.json"
RUN_INFO = ROOT / "mutants" / "mutation_run.json"   # the last run's wall time, for --report-only
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
        "_says_hello", "parse_record", "OrderLog._recover_journal", "OrderLog._read_back",
        "OrderManager._replay", "OrderManager.toggle_kill_switch", "OrderManager._on_frame",
        "OrderManager._on_hello", "OrderManager._implicit_hello", "OrderManager._on_order",
        "OrderManager._risk", "OrderManager._commit_failed", "OrderManager._malformed",
        "OrderManager._reject_rule", "OrderManager._reject"),
    "processes/shared/journal.py": ("Journal.*", "read_records", "_records"),
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
    reap_leftovers()
    if proc.returncode != 0:
        sys.exit(f"mutmut run failed with exit code {proc.returncode}")
    wall = time.monotonic() - t0
    RUN_INFO.write_text(json.dumps({"wall_s": wall, "max_children": max_children}))
    return wall


def reap_leftovers() -> None:
    """SIGKILL stack processes left by mutants whose test run mutmut killed (a mutant that
    hangs the stop sequence leaves, say, a stopped Gateway): every process whose working
    directory is in mutants/ was started by this run."""
    mutants = str(ROOT / "mutants")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == mutants or cwd.startswith(mutants + "/")) and int(pid) != os.getpid():
            print(f"killing process {pid} left in {cwd}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


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


def covering_tests() -> dict[str, list[str]]:
    """{function's mutant prefix: the tests that call it}, from the last run's stats."""
    path = ROOT / "mutants" / "mutmut-stats.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())["tests_by_mangled_function_name"]
    return {fn: sorted(tests) for fn, tests in raw.items()}


def diff_of(mutant: str, path: str) -> str:
    """The mutant's diff against its function (mutmut reads it from mutants/)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return get_diff_for_mutant(mutant, path=path)
    finally:
        os.chdir(cwd)


def function_of(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def diff_key(mutant: str, diff: str) -> str:
    """A mutant's identity across runs: its function and the lines it adds (mutmut's numbers
    shift when the function or the mutation config changes)."""
    added = [x for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")]
    return "\n".join([function_of(mutant), *added])


def source_line(path: str, mutant: str, diff: str) -> int | None:
    """The file line of the first line the mutant removes."""
    rel = None
    line = None
    for text in diff.splitlines():
        if m := re.match(r"@@ -(\d+)", text):
            line = int(m[1])
        elif line is not None:
            if text.startswith("-") and not text.startswith("---"):
                rel = line
                break
            if not text.startswith("+"):
                line += 1
    if rel is None:
        return None
    name = function_of(mutant).rpartition(".")[2]
    cls, _, fn = name.removeprefix("x").strip(SEP).rpartition(SEP) if SEP in name else (
        "", "", name.removeprefix("x_"))
    tree = ast.parse((ROOT / path).read_text())
    nodes = tree.body
    if cls:
        nodes = next((n.body for n in tree.body if isinstance(n, ast.ClassDef)
                      and n.name == cls), [])
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return first + rel - 1
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


def load_baseline(path: Path = BASELINE) -> dict:
    return json.loads(path.read_text())


def verdict_for(mutant: str, diff: str, verdicts: list[Verdict]) -> Verdict | None:
    added = "\n".join(x for x in diff.splitlines() if x.startswith("+"))
    for v in verdicts:
        if fnmatch.fnmatchcase(mutant, v.mutants) and (not v.contains or v.contains in added):
            return v
    return None


def short(mutant: str) -> str:
    return mutant.replace(f"x{SEP}", "").replace(SEP, ".").replace(".x_", ".")


def path_of(mutant: str) -> str:
    return mutant.split(".x")[0].replace(".", "/") + ".py"


def table(counts: dict[str, int]) -> list[str]:
    return ["| status | mutants |", "|---|---|",
            *[f"| {s} | {n} |" for s, n in sorted(counts.items())],
            f"| **total** | {sum(counts.values())} |"]


def write_report(statuses: dict[str, str], verdicts: list[Verdict], baseline: dict,
                 wall_s: float | None, max_children: int, out: Path) -> tuple[int, int]:
    """mutation_report.md; (survivors, of them unexplained)."""
    from importlib.metadata import version

    targets = target_functions()
    globs = mutant_globs(targets)
    mine = {m: s for m, s in statuses.items() if any(fnmatch.fnmatchcase(m, g) for g in globs)}
    counts: dict[str, int] = {}
    for s in mine.values():
        counts[s] = counts.get(s, 0) + 1
    survivors = sorted(m for m, s in mine.items() if s == "survived")
    diffs = {m: diff_of(m, path_of(m)) for m in mine}
    now_by_key = {diff_key(m, d): m for m, d in diffs.items()}
    tests_now = covering_tests()
    tests_then = baseline["tests_by_function"]

    def added_tests(fn: str) -> str:
        new = [t for t in tests_now.get(fn, []) if t not in set(tests_then.get(fn, []))]
        files = sorted({t.split("::")[0] for t in new})
        return ", ".join(f"`{f}`" for f in files) or "(none added)"

    lines = [
        "# Mutation report", "",
        f"Generated by `python scripts/mutation_report.py` (mutmut {version('mutmut')}, "
        "configured in pyproject.toml `[tool.mutmut]`); do not edit by hand. Verdicts on the "
        "survivors live in `scripts/mutation_verdicts.toml`, the run before the tests written "
        "for them in `scripts/mutation_baseline.json`.", "",
        "Mutated: the target functions below (scripts/mutation_report.py, TARGETS), log lines "
        "and latency samples excepted. Each mutant runs against the fast in-process tests that "
        "call its function (pyproject.toml, pytest_add_cli_args_test_selection).", "",
        "## This run", "", *table(counts), "",
    ]
    if wall_s is not None:
        lines += [f"Run time: {wall_s / 60:.1f} min with --max-children {max_children}.", ""]
    lines += ["## The baseline (the tests before the ones written for this report)", "",
              "The same targets against the baseline's tests (log lines unmutated; latency "
              "samples and the host's log helper mutated in it):", "",
              *table(baseline["counts"]), "", "## Targets", ""]
    lines += [f"- `{path}`: {', '.join(f'`{f}`' for f in fns)}" for path, fns in targets.items()]
    lines += ["", "## The baseline's survivors in this run", "",
              "Each mutant that survived the baseline, found again by its diff; a killed one names "
              "the test files added that call its function.", "",
              "| mutant (baseline) | this run | killed by one of |", "|---|---|---|"]
    for entry in baseline["survived"]:
        m = now_by_key.get(diff_key(entry["mutant"], entry["diff"]))
        if m is None:
            lines.append(f"| `{short(entry['mutant'])}` | not generated (its line is not "
                         "mutated) | |")
        else:
            status = mine[m]
            lines.append(f"| `{short(entry['mutant'])}` | {status} | "
                         f"{added_tests(function_of(m)) if status == 'killed' else ''} |")
    lines += ["", "## Functions the baseline left untested", "",
              "| function | untested (baseline) | killed | survived | no tests | "
              "tests added |", "|---|---|---|---|---|---|"]
    for fn, n in baseline["no_tests_by_function"].items():
        got = [s for m, s in mine.items() if function_of(m) == fn]
        lines.append(f"| `{short(fn)}` | {n} | {got.count('killed')} | {got.count('survived')} "
                     f"| {got.count('no tests')} | {added_tests(fn)} |")
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    unexplained = 0
    for m in survivors:
        diff = diffs[m]
        v = verdict_for(m, diff, verdicts)
        if v is None:
            why = "**UNEXPLAINED**"
            unexplained += 1
        elif v.killed_by:
            why = f"**STILL SURVIVES** although `{v.killed_by}` is meant to kill it"
            unexplained += 1
        else:
            why = v.why
        path = path_of(m)
        lines += [f"### `{short(m)}` ({path}:{source_line(path, m, diff)})", "", why, "",
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
        baseline = load_baseline()
    except (ValueError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for path, fns in targets.items():
            print(f"{path}: {', '.join(fns)}")
        print(f"{len(mutant_globs(targets))} mutant globs, {len(verdicts)} verdicts, "
              f"{len(baseline['survived'])} survivors in the baseline")
        return 0
    if not args.report_only:
        run_mutmut(mutant_globs(targets), args.max_children)
    run = json.loads(RUN_INFO.read_text()) if RUN_INFO.exists() else {}
    survivors, unexplained = write_report(results(), verdicts, baseline, run.get("wall_s"),
                                          run.get("max_children", args.max_children), args.output)
    print(f"{args.output}: {survivors} surviving mutants, {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    raise SystemExit(main())
