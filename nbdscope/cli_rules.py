"""`nbdscope rules`: the catalogue (each check with the severity it is reported at), one rule or check
explained (`rules ID`, `rules ID.CHECK`), and the requirement table's coverage (`rules --coverage`);
and the --select/--ignore options the analysing commands share."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbdscope.report import ruledoc


class RulesUsageError(Exception):
    """A bad id or combination: one line, exit 2 (cli.main turns it into its UsageError)."""


def add_rules_parser(sub: Any) -> None:
    r = sub.add_parser("rules", help="list every rule and check, explain one, or show the requirement coverage")
    r.add_argument("id", nargs="?", metavar="ID[.CHECK]", help="explain this rule or check (like `ruff rule`)")
    r.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: a table, or markdown for one rule; json: one object "
                        "(docs/schemas/: rules, rule-explain, coverage)")
    r.add_argument("--coverage", action="store_true",
                   help="the requirement table: totals per part and section, then every row")


def add_selection_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which findings are reported (also `select`/`ignore` in nbdscope.toml)")
    g.add_argument("--select", action="append", metavar="RULE[.CHECK]",
                   help="report only these rules or checks (repeatable, or a comma list); replaces the config's")
    g.add_argument("--ignore", action="append", metavar="RULE[.CHECK]",
                   help="silence these rules or checks (repeatable, or a comma list); replaces the config's. "
                        "Silenced findings are counted in the summary and never fail the run")
    g.add_argument("--config", metavar="FILE", help="read select/ignore from FILE instead of the one found")
    g.add_argument("--no-config", action="store_true", help="do not read nbdscope.toml or [tool.nbdscope]")


def selection_of(args: argparse.Namespace) -> Any:
    """The Selection the options and the configuration file ask for (RulesUsageError if they are bad)."""
    from nbdscope.config import ConfigError, selection
    from nbdscope.selection import SelectionError

    if args.config is not None and args.no_config:
        raise RulesUsageError("--config and --no-config contradict each other")
    try:
        return selection(args.select, args.ignore, config=args.config, no_config=args.no_config)
    except (SelectionError, ConfigError) as exc:
        raise RulesUsageError(str(exc)) from None


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160, highlight=False)


def rules(args: argparse.Namespace) -> int:
    if args.coverage:
        if args.id is not None:
            raise RulesUsageError("--coverage shows the whole table: give no rule id with it")
        return _coverage(args.format)
    if args.id is not None:
        try:
            text = ruledoc.explain(args.id) if args.format == "text" else ruledoc.dumps(ruledoc.explain_json(args.id))
        except KeyError as exc:
            raise RulesUsageError(exc.args[0]) from None
        sys.stdout.write(text)
        return 0
    if args.format == "json":
        sys.stdout.write(ruledoc.dumps(ruledoc.listing_json()))
        return 0
    _listing()
    return 0


def _coverage(fmt: str) -> int:
    from nbdscope.report import coverage

    if fmt == "json":
        sys.stdout.write(ruledoc.dumps(coverage.coverage_json()))
    else:
        coverage.render(_console())
    return 0


def _listing() -> None:
    from rich.table import Table

    entries = ruledoc.rule_entries()
    checks = sum(len(r.checks) for r in entries)
    table = Table(title=f"{len(entries)} rules, {checks} checks (`nbdscope rules ID` explains one)",
                  title_justify="left")
    for col in ("id", "severity", "blame", "spec / requirements", "meaning"):
        table.add_column(col, overflow="fold")
    for r in entries:
        i = r.info
        table.add_row(f"[bold]{i.id}[/bold]", i.severity, i.blame, i.spec, i.summary, end_section=not r.checks)
        for n, c in enumerate(r.checks, 1):
            table.add_row(f"  {c.id}", c.severity, c.blame, ", ".join(c.check.requires) or "(hazard)",
                          c.check.summary, end_section=n == len(r.checks))
    _console().print(table)
