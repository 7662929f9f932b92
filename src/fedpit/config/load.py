"""Build a :class:`~fedpit.config.schema.RunConfig` from flat dotted keys, and back.

Keys come from TOML files (:func:`load_toml`), ``key=value`` overrides
(:func:`parse_overrides`) or Flower's run config; :func:`from_flat` coerces them to the
schema's types and runs :func:`fedpit.config.checks.validate` on the result, so every
config a component sees is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedpit.config.checks import validate
from fedpit.config.schema import RunConfig, Scalar
from fedpit.errors import ConfigError


def _key(name: str) -> str:
    return name.replace("_", "-")


def _scalar_type(tp: Any) -> type:
    if isinstance(tp, str):
        tp = eval(tp, vars(typing), {})  # annotations are strings under __future__
    if isinstance(tp, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if not isinstance(tp, type):
        raise TypeError(f"config fields are scalars or optional scalars, not {tp!r}")
    return tp


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def default_flat() -> dict[str, Scalar]:
    """All keys with their default values, flat and dotted."""
    return to_flat(RunConfig())


def to_flat(cfg: RunConfig) -> dict[str, Scalar]:
    """Flatten a config to dotted keys (the inverse of :func:`from_flat`)."""
    flat: dict[str, Scalar] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                flat[f"{_key(f.name)}.{_key(sub.name)}"] = getattr(value, sub.name)
        else:
            flat[_key(f.name)] = value
    return flat


def _coerce(key: str, raw: Any, tp: type) -> Scalar:
    """Convert a TOML or command-line value to the field's type, or fail clearly."""
    try:
        if tp is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes"):
                return True
            if str(raw).lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if tp is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(f"{key} = {raw!r}: expected {tp.__name__}") from None


def from_flat(values: Mapping[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from flat dotted keys over the defaults.

    Unknown keys are errors (with the closest known key suggested), never ignored.
    """
    known = default_flat()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}")
    top_hints = _hints(RunConfig)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        tp = top_hints[f.name]
        if _is_section(tp):
            sub_hints = _hints(tp)
            sub_kwargs = {}
            for sub in dataclasses.fields(tp):
                key = f"{_key(f.name)}.{_key(sub.name)}"
                if key in values:
                    sub_kwargs[sub.name] = _coerce(
                        key, values[key], _scalar_type(sub_hints[sub.name])
                    )
            kwargs[f.name] = tp(**sub_kwargs)
        elif _key(f.name) in values:
            key = _key(f.name)
            kwargs[f.name] = _coerce(key, values[key], _scalar_type(tp))
    cfg = RunConfig(**kwargs)
    validate(cfg)
    return cfg


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into flat dotted keys (nested tables are flattened)."""
    import tomllib

    p = Path(path)
    try:
        with p.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    if "tool" in doc:  # a pyproject.toml: take its Flower app config
        doc = doc.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(key + ".", v)
            else:
                flat[key] = v

    walk("", doc)
    return flat


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Parse ``key=value`` command-line items."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value, e.g. fed.beta=0.5")
        out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def build_config(config_file: str | None, overrides: Sequence[str]) -> RunConfig:
    """Defaults ← file ← overrides, parsed and validated once."""
    values: dict[str, object] = {}
    if config_file:
        values.update(load_toml(config_file))
    values.update(parse_overrides(list(overrides)))
    return from_flat(values)
