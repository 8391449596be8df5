"""Loading a config: file discovery, bounded YAML, ${VAR} expansion, environment overrides, and
validation errors that name the key and suggest the right one."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from recoverctl.config.base import ENV_CATALOG, ENV_CONFIG, ENV_REPOSITORY, ENV_REPOSITORY_NAME
from recoverctl.config.catalog import SECTION_FIELD, CatalogSection
from recoverctl.config.root import Config
from recoverctl.errors import ConfigError

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{where}: environment variable '{name}' is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def discover_path(explicit: str | None, env: typing.Mapping[str, str]) -> Path | None:
    """Return the config file to read, or None if none exists; raise ConfigError for a missing named one."""
    named = explicit or env.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            source = "--config" if explicit else ENV_CONFIG
            raise ConfigError(f"config file '{path}' (from {source}) does not exist")
        return path
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (
        Path("recoverctl.yaml"),
        xdg / "recoverctl" / "recoverctl.yaml",
        Path("/etc/recoverctl/recoverctl.yaml"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        names.append(info.alias or name)
    return names


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _type_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """Follow a pydantic error location through the model types; return the type it reaches, or None."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            fields.update(tp.model_fields)
            if part not in fields:
                return None
            tp = fields[part].annotation
        elif origin in (dict, list):
            tp = typing.get_args(tp)[-1]
        elif origin in (Union, types.UnionType):
            # A tagged union: pydantic puts the tag value into the location.
            tp = _union_member(tp, part)
            if tp is None:
                return None
        else:
            return None
    return tp


def _union_member(union: Any, tag: int | str) -> type[BaseModel] | None:
    for member in typing.get_args(union):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for f in member.model_fields.values():
                if typing.get_origin(f.annotation) is Literal and tag in typing.get_args(f.annotation):
                    return member
    return None


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Return the model that owns the last key of a pydantic error location."""
    tp = _unwrap(_type_at(root, loc[:-1]))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _humanize(err: ValidationError, path: Path | None, root: type[BaseModel]) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        visible = _visible_loc(loc, root)
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in visible).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            owner = _model_at(root, loc)
            key = str(loc[-1])
            suggestion = ""
            if owner is not None:
                close = difflib.get_close_matches(key, _field_names(owner), n=1, cutoff=0.5)
                if close:
                    suggestion = f", did you mean '{close[0]}'?"
                else:
                    suggestion = f" (valid keys: {', '.join(_field_names(owner))})"
            lines.append(f"{where}: unknown key{suggestion}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            lines.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    src = f"'{path}'" if path else "configuration from the environment"
    return ConfigError(
        f"invalid configuration in {src}:\n  " + "\n  ".join(lines),
        hint="fix the keys named above; 'recoverctl config check' validates without running anything",
        details={"file": str(path) if path else None, "errors": lines},
    )


def _visible_loc(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[int | str]:
    """Drop the tag values pydantic inserts into the location of tagged-union members, and name
    the `catalog:` mapping as the file does."""
    visible: list[int | str] = []
    if loc[:1] == (SECTION_FIELD,):
        visible, loc = ["catalog"], loc[1:]  # the `catalog:` mapping, as the file spells it
        root = CatalogSection
    for i, part in enumerate(loc):
        prefix = loc[:i]
        tp = _unwrap(_type_at(root, prefix))
        if typing.get_origin(tp) in (Union, types.UnionType) and isinstance(part, str):
            continue
        visible.append(part)
    return visible


def parse_config(
    data: Any, *, path: Path | None = None, env: typing.Mapping[str, str] | None = None
) -> Config:
    """Given the raw YAML document, return a validated Config with environment overrides applied."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must be a mapping of keys, not {type(data).__name__}")
    data = _expand(data, "", env)
    if env.get(ENV_REPOSITORY) and isinstance(data.get("repositories"), dict) and data["repositories"]:
        # it names the primary: the first of `repositories`
        first, repo = next(iter(data["repositories"].items()))
        repo = {**repo, "url": env[ENV_REPOSITORY]} if isinstance(repo, dict) else env[ENV_REPOSITORY]
        data["repositories"] = {**data["repositories"], first: repo}
    elif env.get(ENV_REPOSITORY):
        repo = data.get("repository")
        if isinstance(repo, dict):
            data["repository"] = {**repo, "url": env[ENV_REPOSITORY]}
        else:
            data["repository"] = env[ENV_REPOSITORY]
    if env.get(ENV_CATALOG):
        section = data.get("catalog")
        data["catalog"] = (
            {**section, "url": env[ENV_CATALOG]} if isinstance(section, dict) else env[ENV_CATALOG]
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise _humanize(e, path, Config) from None
    cfg.path = path
    if env.get(ENV_REPOSITORY_NAME):
        cfg = cfg.for_repository(env[ENV_REPOSITORY_NAME], from_environment=True)
    return cfg


# --- YAML ----------------------------------------------------------------------------------------

# Nodes a document may expand to once every alias is replaced by what it names. A real config is a
# few thousand; an alias bomb ("billion laughs") is a few lines that expand to 10^9, which the
# ${VAR} expansion and validation would then copy node by node until memory runs out.
MAX_YAML_NODES = 50_000


class YamlBombError(yaml.YAMLError):
    """The document expands past the node budget, or an alias contains itself."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: yaml.Node, limit: int) -> int:
    """Return how many nodes `root` expands to with aliases copied out (capped at limit + 1).

    An alias is the same node object as its anchor, so a subtree's size is computed once and
    reused. Iterative: a deeply nested document must not exhaust the interpreter's stack here.
    Raise YamlBombError for an alias that contains itself.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlBombError(
                f"an alias refers to the collection that contains it (line {node.start_mark.line + 1})"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past `max_nodes` nodes.

    The check runs on the composed node graph, before any Python object is constructed.
    """

    max_nodes = MAX_YAML_NODES

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            size = expanded_size(node, self.max_nodes)
            if size > self.max_nodes:
                raise YamlBombError(
                    f"the document expands to more than {self.max_nodes} nodes through its aliases "
                    "(an alias bomb?)"
                )
        return node


def load_yaml(text: str, what: str) -> Any:
    """Parse one YAML document with BoundedLoader; raise ConfigError naming `what` when invalid."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader subclass: no arbitrary objects
    except YamlBombError as e:
        raise ConfigError(
            f"{what} is refused: {e}",
            hint="write the repeated parts out instead of nesting aliases",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{what} is refused: it is nested too deeply") from None


def load_config(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the configuration; raise ConfigError naming the file and key."""
    env = os.environ if env is None else env
    path = discover_path(explicit, env)
    data: Any = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
        data = load_yaml(text, f"config file '{path}'")
    return parse_config(data, path=path, env=env)
