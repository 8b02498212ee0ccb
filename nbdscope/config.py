"""The project configuration nbdscope finds by itself: ``nbdscope.toml``, or ``[tool.nbdscope]`` in
``pyproject.toml``, in the current directory or the nearest parent holding one.

In each directory from the current one upwards, ``nbdscope.toml`` is taken if present (the whole
file is the configuration); otherwise a ``pyproject.toml`` with a ``[tool.nbdscope]`` table; the
first directory with either wins, the rest are not read. Keys (both optional, lists of rule or check
ids): ``select`` and ``ignore``. ``--select`` and ``--ignore`` on the command line replace the file's
list of the same name; ``--no-config`` skips the file, ``--config FILE`` names one."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbdscope.selection import Selection, SelectionError, split_ids, validate

FILE_NAME = "nbdscope.toml"
KEYS = ("select", "ignore")


class ConfigError(ValueError):
    """A configuration file that cannot be read or holds what nbdscope does not know; one line."""


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


def find(start: Path | None = None) -> Path | None:
    """The configuration file that applies in ``start`` (the current directory by default), if any."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        own = directory / FILE_NAME
        if own.is_file():
            return own
        project = directory / "pyproject.toml"
        if project.is_file() and "nbdscope" in _read(project).get("tool", {}):
            return project
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {str(exc).splitlines()[0]}") from None


def load(path: Path) -> Config:
    data = _read(path)
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("nbdscope", {})
        where = f"{path} [tool.nbdscope]"
    else:
        where = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    lists: dict[str, tuple[str, ...]] = {}
    for key in KEYS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of rule or check ids")
        try:
            lists[key] = validate(split_ids(value), f"{where}: {key}")
        except SelectionError as exc:
            raise ConfigError(str(exc)) from None
    return Config(path, lists["select"], lists["ignore"])


def selection(cli_select: list[str] | None, cli_ignore: list[str] | None, *, config: str | None = None,
              no_config: bool = False, start: Path | None = None) -> Selection:
    """The run's selection: the command line's lists where given, else the configuration file's.
    Raises SelectionError or ConfigError (both one line) for unknown ids or a bad file."""
    if config is not None:
        path: Path | None = Path(config)
        if not path.is_file():  # type: ignore[union-attr]
            raise ConfigError(f"{config}: no such configuration file")
    else:
        path = None if no_config else find(start)
    found = load(path) if path is not None else Config()
    select = validate(split_ids(cli_select), "--select") if cli_select else found.select
    ignore = validate(split_ids(cli_ignore), "--ignore") if cli_ignore else found.ignore
    origin = []
    if found.path is not None and ((not cli_select and found.select) or (not cli_ignore and found.ignore)):
        origin.append(str(found.path))
    if cli_select or cli_ignore:
        origin.append("command line")
    return Selection(select, ignore, ", ".join(origin))
