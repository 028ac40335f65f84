"""A small JSON Schema validator for the subset of keywords that manifest.schema.json uses.

The runtime's dependencies are fixed by design (numpy, onnx, onnxruntime, pillow, tokenizers,
typer, jinja2); ``jsonschema`` would add four packages, one of them compiled, to check one small file.
The test suite checks this validator against ``jsonschema`` itself on valid and broken manifests.
"""

from __future__ import annotations

import math
import re
from typing import Any

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: dict, root: dict | None = None, where: str = "manifest") -> list[str]:
    """Return a list of problems (empty when ``value`` conforms to ``schema``)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return validate(value, node, root, where)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return [f"{where} should be {' or '.join(types)}, not {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where} is {value!r}, expected one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 62):
            errors.append(f"{where} has length {len(value)} outside the allowed range")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where} does not match {schema['pattern']}")
    bounded = any(k in schema for k in ("minimum", "exclusiveMinimum", "maximum"))
    if isinstance(value, float) and bounded and not math.isfinite(value):  # NaN, Infinity: JSON parsers accept them
        errors.append(f"{where} is {value}, not a finite number")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and not value >= schema["minimum"]:
            errors.append(f"{where} is below {schema['minimum']}")
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            errors.append(f"{where} must be above {schema['exclusiveMinimum']}")
        if "maximum" in schema and not value <= schema["maximum"]:
            errors.append(f"{where} is above {schema['maximum']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 62):
            errors.append(f"{where} has {len(value)} items, outside the allowed range")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(value, dict):
        errors += _validate_object(value, schema, root, where)
    return errors


def _validate_object(value: dict, schema: dict, root: dict, where: str) -> list[str]:
    errors = [f"{where} is missing {k!r}" for k in schema.get("required", []) if k not in value]
    if len(value) < schema.get("minProperties", 0):
        errors.append(f"{where} needs at least {schema['minProperties']} entries")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if "propertyNames" in schema:
            errors += validate(key, schema["propertyNames"], root, f"{where} key {key!r}")
        if key in props:
            errors += validate(item, props[key], root, f"{where}.{key}")
        elif extra is False:
            errors.append(f"{where} has an unknown field {key!r}")
        elif isinstance(extra, dict):
            errors += validate(item, extra, root, f"{where}.{key}")
    return errors
