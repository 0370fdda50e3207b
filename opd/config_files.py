"""The config before schema validation: YAML syntax, one-of alternatives, numbers written as text.

The Snakefile calls these before ``validate``, so these mistakes get a message that names the
file, line and column, or the key and the fix, instead of a schema error that names neither:

* ``load_config_file``: a YAML syntax error names the file, line and column;
* ``resolve_alternatives``: where the schema asks for exactly one of several keys (``sft``:
  ``epochs`` | ``steps``; ``data.selection``: ``fraction`` | ``top_n``; ``models.<name>``:
  ``world`` | ``path`` | ``from_experiment``), a key set to ``null`` counts as absent, and the
  key that the last config file sets replaces the alternative an earlier file set, so an
  override file can switch from one to the other. Both set in one file is an error that names
  both keys;
* ``number_strings``: YAML 1.1 reads ``1e-4`` (no decimal point) as a string; where the schema
  wants a number the error names the key and says to write ``1.0e-4`` (or, for text that a YAML
  file would read as a number, that it came from snakemake's ``--config``, which reads nested
  values as text, and names ``--configfile``);
* ``non_finite``: YAML reads ``.inf`` and ``.nan`` as numbers, which pass every range of the
  schema (``nan`` fails no comparison); a non-finite number anywhere in the config is an error
  naming the key.

Snakemake itself parses the ``--configfile`` files before the Snakefile runs, and on a syntax
error says only "Config file is not valid JSON or YAML"; ``python -m opd.config_files FILE...``
(or ``snakemake --verbose``) then names the line.

    files = [load_config_file(f) for f in paths]
    prepare_config(config, "config/schema.yaml", files)
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Iterator

import yaml

from opd.errors import ConfigError

_NUMBER = re.compile(r"^\s*[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def load_config_file(path) -> dict:
    """A config file as a dict (JSON, else YAML, as Snakemake reads it); ``ConfigError`` naming
    the file, line and column of a syntax error."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        data = yaml.load(text, Loader=yaml.FullLoader)
    except yaml.YAMLError as err:
        def at(mark) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        mark, context = getattr(err, "problem_mark", None), getattr(err, "context", None)
        what = getattr(err, "problem", None) or str(err)
        if context and getattr(err, "context_mark", None) is not None:
            what += f" ({context} at {at(err.context_mark)})"
        raise ConfigError(f"{path}{', ' + at(mark) if mark else ''}: invalid YAML: {what}; fix the "
                          "syntax there (unclosed brackets or quotes, a tab in the indentation, a "
                          "missing space after `:`)") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys at the top level, got "
                          f"a {type(data).__name__}")
    return data


# ------------------------------------------------------------------------ walking the schema


def _resolve(node: dict, schema: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = schema
        for part in ref[2:].split("/"):
            node = node[part]
    return node if isinstance(node, dict) else {}


def walk(config, schema: dict, path: str = "", node: dict | None = None) -> Iterator:
    """``(key, value, schema node)`` for every key of ``config`` that the schema describes,
    depth first, parents before children (``$ref``, ``properties``, ``additionalProperties``)."""
    node = _resolve(schema if node is None else node, schema)
    yield path, config, node
    if not isinstance(config, dict):
        return
    props = node.get("properties") or {}
    extra = node.get("additionalProperties")
    for k, v in config.items():
        sub = props.get(k, extra if isinstance(extra, dict) else None)
        if sub is not None:
            yield from walk(v, schema, f"{path}.{k}" if path else str(k), sub)


def _alternatives(node: dict) -> list[str] | None:
    """The keys of a ``oneOf: [{required: [a]}, {required: [b]}, ...]``, else None."""
    branches = node.get("oneOf") or []
    if len(branches) < 2 or not all(set(b) == {"required"} and len(b["required"]) == 1
                                    for b in branches):
        return None
    return [b["required"][0] for b in branches]


def _at(config: dict, path: str):
    for part in path.split(".") if path else []:
        if not isinstance(config, dict):
            return None
        config = config.get(part)
    return config


def resolve_alternatives(config: dict, schema: dict, sources=()) -> None:
    """Settle each one-of group of keys in ``config`` (in place); ``sources``: the config files
    (and overrides) as ``(name, dict)`` in merge order, so the last one to set a key decides."""
    for path, value, node in list(walk(config, schema)):
        keys = _alternatives(node)
        if keys is None or not isinstance(value, dict):
            continue
        for k in keys:
            if k in value and value[k] is None:
                del value[k]                     # null counts as absent
        present = [k for k in keys if k in value]
        where = path or "the config"
        if not present:
            raise ConfigError(f"{where}: set one of {' or '.join(f'`{k}`' for k in keys)}")
        if len(present) == 1:
            continue
        both = " and ".join(f"`{k}`" for k in present)
        for name, src in reversed(list(sources)):
            sub = _at(src, path)
            chosen = [k for k in present if isinstance(sub, dict) and sub.get(k) is not None]
            if len(chosen) > 1:
                raise ConfigError(f"{where}: {both} are both set in {name}, but they are "
                                  "alternatives: keep one of them")
            if chosen:
                for k in present:
                    if k != chosen[0]:
                        del value[k]
                break
        else:
            raise ConfigError(f"{where}: {both} are both set, but they are alternatives: keep "
                              f"one of them (or set the one you do not want to null)")


def _types(node: dict) -> set[str]:
    t = node.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _yaml_number(text: str, integer: bool) -> str:
    """``text`` as YAML 1.1 reads a number: ``1e-4`` -> ``1.0e-4``, ``5e5`` -> ``5.0e+5``."""
    text = text.strip()
    x = float(text.replace("_", ""))
    if integer and x.is_integer():
        return str(int(x))
    mantissa, e, exponent = re.split(r"([eE])", text) if re.search("[eE]", text) else (text, "", "")
    if "." not in mantissa:
        mantissa += ".0"
    if exponent and exponent[0] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}{e}{exponent}"


def number_strings(config: dict, schema: dict) -> list[str]:
    """One message per string value that reads as a number where the schema wants a number."""
    out = []
    for path, value, node in walk(config, schema):
        types = _types(node)
        if not isinstance(value, str) or "string" in types or not types & {"number", "integer"}:
            continue
        if not _NUMBER.match(value):
            continue
        if isinstance(yaml.safe_load(value), (int, float)):
            # a YAML file reads this form as a number: the text came from the command line, whose
            # nested values snakemake's --config reads as text (its BaseLoader)
            out.append(f"{path}: {value!r} is text, not a number: snakemake's --config reads values "
                       f"nested in a section as text; set {path} in a --configfile instead")
        else:
            fixed = _yaml_number(value, integer="number" not in types)
            out.append(f"{path}: {value!r} is read by YAML as text, not a number (YAML wants a "
                       f"decimal point and a signed exponent); write {fixed}")
    return out


def non_finite(config, path: str = "") -> list[str]:
    """One message per number in ``config`` (nested dicts and lists) that is inf or nan."""
    if isinstance(config, float) and not math.isfinite(config):
        return [f"{path or 'the config'}: {config} is not a finite number; write a finite value "
                "(or null where the key allows it)"]
    if isinstance(config, dict):
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in config.items()]
    elif isinstance(config, list):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(config)]
    else:
        return []
    return [m for key, value in items for m in non_finite(value, key)]


def prepare_config(config: dict, schema_path, sources=()) -> None:
    """Everything above, on the merged ``config`` (in place), before ``validate``."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = number_strings(config, schema) + non_finite(config)
    if problems:
        raise ConfigError("; ".join(problems))
    resolve_alternatives(config, schema, sources)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        try:
            load_config_file(arg)
            print(f"{arg}: valid")
        except ConfigError as err:
            sys.exit(str(err))
