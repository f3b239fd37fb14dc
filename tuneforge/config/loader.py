"""Load a YAML recipe, apply CLI overrides, validate, and report every problem at once.

Errors name the file, the YAML line where the field sits (when it is in the file), the dotted path of
the field and how to fix it, so a user fixes the whole recipe in one go.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tuneforge.config.recipe import Recipe
from tuneforge.errors import UserError
from tuneforge.secrets import redact


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b.c=value``; the value is read as YAML so numbers, booleans and lists keep their type."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like section.field=value (e.g. train.learning_rate=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lora": {"r": 8}}`` -> ``{"lora.r": 8}`` (with ``prefix.`` in front when given)."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def derive_recipe(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A validated copy of ``recipe`` with dotted ``overrides`` set: the one way a strategy makes a
    variant (a stage's recipe, a trial's recipe) of the recipe it was given. Raises ``ValidationError``."""
    return Recipe.model_validate(apply_overrides(recipe.model_dump(mode="json"), overrides))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys into a nested dict (creating sections as needed). Returns ``data``."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                line = first.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if line != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(line, one-line description) of a YAML error (PyYAML's own text spans several lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return line, f"unacceptable character {char}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({context} on line {context_mark.line + 1})"
    return (mark.line + 1 if mark else None), problem


def read_yaml(path: str | Path, what: str = "recipe") -> tuple[Any, str]:
    """Parse a YAML file (recipe or template); any problem is one UserError naming ``file:line``.

    Returns the value and the text (for line numbers). Duplicate keys and strings that are not Unicode
    (a lone surrogate escape such as ``"\\ud800"``) are errors too.
    """
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a {what} file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        raise UserError(f"{p}:{line}: invalid YAML: {problem}" if line else f"{p}: invalid YAML: {problem}") from None
    from tuneforge.unicode import lone_surrogate

    bad = lone_surrogate(value)
    if bad is not None:
        loc = tuple(re.split(r"\.|\[(\d+)\]", bad[0])) if bad[0] != "(record)" else ()
        loc = tuple(part for part in loc if part)
        line = _yaml_lines(text).get(loc)
        raise UserError(f"{p}:{line}: {bad[0]}: {bad[1]}" if line else f"{p}: {bad[0]}: {bad[1]}")
    return value, text


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*path, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, str(i))] = item.start_mark.line + 1
                walk(item, (*path, str(i)))

    if root is not None:
        walk(root, ())
    return lines


def _fields_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """Field names of the section that holds ``loc`` (for did-you-mean suggestions)."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def format_validation_error(err: ValidationError, source: str, lines: dict[tuple[str, ...], int]) -> list[str]:
    """One line per problem: ``file:line: path: what is wrong; fix``."""
    problems = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        # Drop the union tags pydantic inserts (e.g. "DataConfig") from the location.
        loc = tuple(p for p in loc if not (p[:1].isupper() and p.endswith("Config")))
        path = ".".join(loc) or "(top level)"
        line = lines.get(loc) or lines.get(loc[:-1])
        where = f"{source}:{line}" if line else source
        kind = e["type"]
        if kind == "extra_forbidden":
            options = _fields_at(Recipe, loc[:-1])
            close = difflib.get_close_matches(loc[-1], options, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(options)}"
            problems.append(f"{where}: {path}: unknown key; {hint}")
        elif kind == "missing":
            problems.append(f"{where}: {path}: required field is missing; add it (see `tuneforge config docs`)")
        else:
            got = e.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            problems.append(f"{where}: {path}: {e['msg']}{got_text}")
    return problems


def load_recipe(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a recipe file (or start from defaults), apply overrides, validate everything at once."""
    data: dict[str, Any] = {}
    text = ""
    source = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise UserError(f"recipe {p} does not exist")
        loaded, text = read_yaml(p)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"{p}:1: a recipe must be a mapping of sections (model:, data:, train:, ...)")
        data = loaded
    apply_overrides(data, overrides or {})
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        problems = format_validation_error(err, source, _yaml_lines(text))
        noun = "problem" if len(problems) == 1 else "problems"
        raise UserError(f"{source}: {len(problems)} {noun} in the recipe", problems) from None


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (every default filled in), credentials redacted.

    This is what run folders keep and ``config show`` prints: a password in a URL (``tune.storage``)
    becomes ``***``. Keep real secrets out of recipes with ``tune.storage_env``.
    """
    return yaml.safe_dump(redact(recipe.model_dump(mode="json")), sort_keys=False, allow_unicode=True)


def describe_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Documentation lines for every field: ``path (type, default): description``."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        sub = next(
            (c for c in [ann, *getattr(ann, "__args__", ())] if isinstance(c, type) and issubclass(c, BaseModel)),
            None,
        )
        if sub is not None:
            out.append(f"{path}:  {field.description or ''}")
            out += describe_fields(sub, f"{path}.")
            continue
        if get_origin(ann) is Literal:
            type_name = "one of " + "|".join(str(a) for a in get_args(ann))
        else:
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
        out.append(f"{path} ({type_name}, {default}): {field.description or ''}")
    return out
