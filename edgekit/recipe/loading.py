"""Loading a recipe: YAML with line numbers, --set overrides, and one-line errors naming the file, line and key."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import first_line
from .schema import Recipe, RecipeError, _LocatedError

__all__ = ["apply_overrides", "load_recipe"]


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"duplicate key '{key}'")
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not last-wins."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
                    seen[key] = key_node.start_mark.line + 1
                except TypeError:  # an unhashable key: the constructor's own error says so
                    continue
        return super().construct_mapping(node, deep=deep)


def _yaml_value(text: str):
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`key.sub=value` (value read as YAML: 0.3, true, [onnx, tflite], null) set into the raw recipe."""
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise RecipeError(f"--set '{item}': give KEY=VALUE, e.g. --set prune.ratio=0.3")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            nxt = _child(node, part)
            if nxt is None or not isinstance(nxt, (dict, list)):
                nxt = {}
                _assign(node, part, nxt, item)
            node = nxt
        _assign(node, parts[-1], _yaml_value(value), item)
    return raw


def _child(node, part: str):
    if isinstance(node, list):
        return node[int(part)] if part.isdigit() and int(part) < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


def _assign(node, part: str, value, item: str) -> None:
    if isinstance(node, list):
        if not (part.isdigit() and int(part) < len(node)):
            raise RecipeError(f"--set '{item}': '{part}' is not an index of that list (it has {len(node)} entries)")
        node[int(part)] = value
    else:
        node[part] = value


def _line_of(root, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at `loc` (or of its nearest parent present in the file)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if hit is None:
                break
            node, line = hit[1], hit[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _fields_at(loc: tuple) -> list[str]:
    """The keys the schema allows at `loc` (for 'did you mean')."""
    cls: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(str(part))
        if info is None:
            return []
        ann = info.annotation
        for arg in (ann, *typing.get_args(ann), *[a for x in typing.get_args(ann) for a in typing.get_args(x)]):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                cls = arg
                break
        else:
            return []
    return list(cls.model_fields)


def _describe(err: ErrorDetails) -> tuple[tuple, str]:
    loc = tuple(err.get("loc", ()))
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("error"), _LocatedError):
        return ctx["error"].loc, str(ctx["error"])
    if err["type"] == "extra_forbidden":
        near = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; allowed: {', '.join(_fields_at(loc[:-1]))}"
        return loc, f"unknown key{hint}"
    if err["type"] == "missing":
        return loc, "missing (required)"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f" (got {err['input']!r})"
    return loc, msg


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict]:
    """Read and validate a recipe; errors name the file, line and key. Returns the recipe and its raw dict."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe '{path}' does not exist; give a YAML file such as recipes/quickstart.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"cannot read recipe '{path}' ({first_line(e)}); give a YAML text file") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise RecipeError(
            f"{path}:{e.line}: key '{e.key}' appears twice in one mapping (first at line {e.first}); "
            "keep one (YAML would silently use the last)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or first_line(e)})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, model:, compile: ...), not {type(raw).__name__}")
    overrides = list(overrides or [])
    raw = apply_overrides(raw, overrides)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")  # a typo explains a "missing"
        loc, msg = _describe(errors[0])
        key = ".".join(str(p) for p in loc) or "(top level)"
        set_by = next(
            (o for o in reversed(overrides) if (key + ".").startswith(o.partition("=")[0].strip() + ".")), None
        )
        where = f"--set {set_by}" if set_by else f"{path}:{_line_of(root, loc)}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{where}: {key}: {msg}{more}") from None
    return recipe, raw
