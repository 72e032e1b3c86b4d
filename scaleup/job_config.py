"""Job configuration: a dataclass of defaults, a config file (YAML or JSON) over it, command-line flags over both.

The precedence is the one diffusers' training examples document and users expect: a value given on the command
line wins over the config file, which wins over the dataclass default (the official aDFT code applies its config
file *after* the flags, silently discarding them; this module does not). Every field of the dataclass becomes a
``--flag`` (underscores become dashes); a config-file key that is not a field is an error, not ignored, so a typo
cannot silently leave a default in place.

argparse and a few lines of dataclass introspection are all this needs: no config library is added for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

Config = TypeVar("Config")


class ConfigError(ValueError):
    """A config file or flag that cannot be used: the message names the key, the value and what is expected."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return tp, False


def coerce(name: str, value: Any, tp: Any) -> Any:
    """``value`` converted to the field type ``tp`` (from a config file or a command-line string), or ConfigError."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{name} must not be empty; expected a value of type {_describe(inner)}")
    origin = typing.get_origin(inner)
    try:
        if origin is typing.Literal:
            choices = typing.get_args(inner)
            if value not in choices:
                raise ConfigError(f"{name} = {value!r} is not one of {', '.join(map(repr, choices))}")
            return value
        if inner is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ConfigError(f"{name} = {value!r} is not a boolean; expected true or false")
        if inner is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"{name} = {value!r} is not an integer")
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ConfigError(f"{name} = {value!r} is not a number")
            return float(value)
        if inner is str:
            if not isinstance(value, (str, Path)):
                raise ConfigError(f"{name} = {value!r} is not a string")
            return str(value)
        if origin in (tuple, list):
            if isinstance(value, str):
                value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
            (item_type, *_) = typing.get_args(inner) or (Any,)
            items = [coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{name} = {value!r} is not a mapping")
            return dict(value)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{name} = {value!r} cannot be read as {_describe(inner)}") from None
    return value


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file holding one mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; expected a YAML or JSON file of key: value pairs")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # PyYAML comes with transformers/accelerate

        try:
            data = yaml.load(text, Loader=_unique_key_loader(path))  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    else:
        def unique(pairs: list[tuple[str, Any]]) -> dict:
            keys = [k for k, _ in pairs]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise ConfigError(f"config file {path} sets {twice[0]!r} twice; keep one (a JSON parser would "
                                  "silently use the last)")
            return dict(pairs)

        try:
            data = json.loads(text, object_pairs_hook=unique)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold one mapping of key: value pairs; got {type(data).__name__}")
    return data


def _unique_key_loader(path: Path):
    """PyYAML's SafeLoader, refusing a key set twice in one mapping (SafeLoader keeps the last without a word, so
    an edited config could run with the value its author thought was gone)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"config file {path} sets {key!r} twice (lines {seen[key]} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config FILE`` and one ``--field-name`` flag per dataclass field (values parsed later, by :func:`coerce`)."""
    parser.add_argument("--config", help="YAML or JSON config file; command-line flags override its values")
    types_ = _field_types(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else "(required)"
        inner, _ = _unwrap_optional(types_[field.name])
        extra = {}
        if inner is bool:  # a plain switch (``--ema``), or an explicit ``--ema true|false`` as config files have it
            extra = dict(nargs="?", const="true", metavar="true|false")
        elif typing.get_origin(inner) is typing.Literal:
            help_text = f"{help_text}; one of {', '.join(map(str, typing.get_args(inner)))}".lstrip("; ")
        if "range" in field.metadata:  # scaleup.setting_ranges: the declared interval, as click shows IntRange
            help_text = f"{help_text}; {field.metadata['range'].describe()}".lstrip("; ")
        # aliases: the other job's name of the same setting (--out / --output-dir), as diffusers' scripts name it
        parser.add_argument(flag, *field.metadata.get("aliases", ()), dest=field.name, default=None,
                            help=f"{help_text} (default: {default})", **extra)


def build_config(cls: type[Config], file_values: dict[str, Any], flag_values: dict[str, Any]) -> Config:
    """The dataclass from defaults < file values < flag values (``None`` flags were not given)."""
    types_ = _field_types(cls)
    unknown = sorted(set(file_values) - set(types_))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(types_)}")
    merged = {**file_values, **{k: v for k, v in flag_values.items() if k in types_ and v is not None}}
    values = {name: coerce(name, value, types_[name]) for name, value in merged.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"incomplete config: {err}") from None


def parse_config(cls: type[Config], argv: Sequence[str] | None = None, *, prog: str | None = None,
                 description: str | None = None) -> Config:
    """Parse ``argv`` into ``cls``: ``--config FILE`` first, then every ``--flag`` over it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_config_arguments(parser, cls)
    args = vars(parser.parse_args(argv))
    file_values = read_config_file(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    return build_config(cls, file_values, args)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dictionary of a config dataclass (tuples as lists, paths as strings)."""
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
