"""Reading a schema file (YAML) into a :class:`RecordSchema`, with file:line in every error.

The file is composed into a node tree with PyYAML's ``SafeLoader`` (no arbitrary tags, aliases are
shared nodes rather than copies) and walked by hand, so each message can point at the line of the
offending key or value. Only scalars are ever constructed into Python objects.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterator
from typing import Final, NoReturn

import yaml

from vault.errors import ConfigError
from vault.schema import _validate
from vault.schema._model import (
    CLASS_OPTIONS,
    DEFAULT_MAX_LENGTH,
    FIELD_NAME_RE,
    MAX_LENGTH_LIMIT,
    FieldClass,
    FieldSpec,
)
from vault.schema._record import RecordSchema

#: ``RecordSchema.source`` of the schema shipped in this package.
DEFAULT_SCHEMA_SOURCE: Final = "vault/schema/default.yaml"
#: A schema file is a few kilobytes; refuse anything absurd before parsing it.
MAX_SCHEMA_BYTES: Final = 1 << 20

_TOP_LEVEL_KEYS: Final = frozenset({"schema_version", "fields", "retention"})
_COMMON_FIELD_KEYS: Final = frozenset({"class", "searchable", "max_length"})
_CLASS_NAMES: Final = frozenset(member.value for member in FieldClass)


def load_schema(path: str | os.PathLike[str] | None = None) -> RecordSchema:
    """Load and check a record schema file.

    Args:
        path: a YAML schema file; ``None`` loads the default schema shipped in this package
            (``vault/schema/default.yaml``, read with :mod:`importlib.resources`).

    Returns:
        The schema, with every field's class options checked (e.g. a national-id ``format`` is an
        importable python-stdnum module).

    Raises:
        ConfigError: the file cannot be read, is not UTF-8 YAML, or does not describe a valid
            schema. The message starts with the file and, where known, the line:
            ``schema.yaml:12: field 'mobile': unknown class 'phonee'``.
    """
    if path is None:
        resource = importlib.resources.files("vault.schema").joinpath("default.yaml")
        return parse_schema(resource.read_bytes(), DEFAULT_SCHEMA_SOURCE)
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            data = stream.read(MAX_SCHEMA_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{source}: cannot read schema file: {reason}") from None
    return parse_schema(data, source)


def parse_schema(data: bytes | str, source: str) -> RecordSchema:
    """Build a schema from the text of a schema file; ``source`` names it in error messages.

    Raises:
        ConfigError: as for :func:`load_schema`.
    """
    if len(data) > MAX_SCHEMA_BYTES:
        raise ConfigError(f"{source}: schema file larger than {MAX_SCHEMA_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: schema file is not UTF-8 text") from None
    try:
        loader = yaml.SafeLoader(data)  # checks every character up front
    except yaml.reader.ReaderError as exc:
        line = data.count("\n", 0, exc.position) + 1
        problem = f"character U+{exc.character:04X} is not allowed in YAML"
        raise ConfigError(f"{source}:{line}: {problem}") from None
    try:
        return _Reader(source, loader).schema()
    finally:
        loader.dispose()


class _Reader:
    """Walks the composed YAML tree of one schema file."""

    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self._source = source
        self._loader = loader

    # -- helpers --------------------------------------------------------------------------------

    def _fail(self, node: yaml.Node | None, problem: str) -> NoReturn:
        where = self._source if node is None else f"{self._source}:{node.start_mark.line + 1}"
        raise ConfigError(f"{where}: {problem}") from None

    def _scalar(self, node: yaml.Node) -> object:
        """The Python value of a scalar node; a mapping or list becomes a sentinel type."""
        if not isinstance(node, yaml.ScalarNode):
            return _NotScalar()
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            problem = exc.problem or "invalid value"
        self._fail(node, problem)

    def _pairs(
        self, node: yaml.MappingNode, what: str
    ) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """``(key, key node, value node)`` of a mapping; keys must be unique strings."""
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._fail(key_node, f"{what}: merge keys (<<) are not supported")
            key = self._scalar(key_node)
            if not isinstance(key, str):
                self._fail(key_node, f"{what}: keys must be strings")
            if key in seen:
                self._fail(key_node, f"{what}: duplicate key {key!r}")
            seen.add(key)
            yield key, key_node, value_node

    # -- the file -------------------------------------------------------------------------------

    def schema(self) -> RecordSchema:
        try:
            root = self._loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = self._source if mark is None else f"{self._source}:{mark.line + 1}"
            # e.g. "expected a single document in the stream, but found another document"
            problem = ", ".join(part for part in (exc.context, exc.problem) if part)
            raise ConfigError(f"{where}: {problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self._source}: invalid YAML: {exc}") from None
        if root is None:
            self._fail(None, "schema file is empty")
        if not isinstance(root, yaml.MappingNode):
            self._fail(root, "top level must be a mapping with 'schema_version' and 'fields'")

        version: int | None = None
        fields: dict[str, FieldSpec] | None = None
        record_days: int | None = None
        class_days: dict[FieldClass, int] = {}
        for key, key_node, value_node in self._pairs(root, "top level"):
            if key == "schema_version":
                version = self._version(value_node)
            elif key == "fields":
                fields = self._fields(value_node)
            elif key == "retention":
                record_days, class_days = self._retention(value_node)
            else:
                expected = ", ".join(sorted(_TOP_LEVEL_KEYS))
                self._fail(key_node, f"unknown top-level key {key!r} (expected {expected})")
        if version is None:
            self._fail(None, "missing 'schema_version'")
        if fields is None:
            self._fail(None, "missing 'fields'")
        try:
            return RecordSchema(
                version=version,
                fields=fields,
                source=self._source,
                record_retention_days=record_days,
                class_retention_days=class_days,
            )
        except ValueError as exc:  # pragma: no cover - everything is checked above with a line
            problem = str(exc)
        self._fail(None, problem)

    def _days(self, node: yaml.Node, what: str) -> int:
        value = self._scalar(node)
        if type(value) is not int or value < 1:
            self._fail(node, f"{what} must be a whole number of days >= 1")
        return value

    def _retention(self, node: yaml.Node) -> tuple[int | None, dict[FieldClass, int]]:
        """``retention: {records_days: N, classes: {card_number: N, ...}}``."""
        if not isinstance(node, yaml.MappingNode):
            self._fail(node, "'retention' must be a mapping (records_days, classes)")
        record_days: int | None = None
        class_days: dict[FieldClass, int] = {}
        for key, key_node, value_node in self._pairs(node, "retention"):
            if key == "records_days":
                record_days = self._days(value_node, "retention.records_days")
            elif key == "classes":
                if not isinstance(value_node, yaml.MappingNode):
                    self._fail(value_node, "retention.classes must map field classes to days")
                for name, name_node, days_node in self._pairs(value_node, "retention.classes"):
                    if name not in _CLASS_NAMES:
                        known = ", ".join(member.value for member in FieldClass)
                        self._fail(
                            name_node, f"retention.classes: unknown class {name!r} (known: {known})"
                        )
                    class_days[FieldClass(name)] = self._days(
                        days_node, f"retention.classes.{name}"
                    )
            else:
                self._fail(
                    key_node, f"unknown retention key {key!r} (expected classes, records_days)"
                )
        return record_days, class_days

    def _version(self, node: yaml.Node) -> int:
        version = self._scalar(node)
        if type(version) is not int or version < 1:
            self._fail(node, "schema_version must be an integer >= 1")
        return version

    def _fields(self, node: yaml.Node) -> dict[str, FieldSpec]:
        if not isinstance(node, yaml.MappingNode):
            self._fail(node, "'fields' must be a mapping of field name to field")
        fields: dict[str, FieldSpec] = {}
        for name, key_node, value_node in self._pairs(node, "fields"):
            if not FIELD_NAME_RE.fullmatch(name):
                self._fail(
                    key_node,
                    f"field name {name!r} must match ^[a-z][a-z0-9_]{{0,62}}$",
                )
            fields[name] = self._field(name, key_node, value_node)
        if not fields:
            self._fail(node, "'fields' must define at least one field")
        return fields

    def _field(self, name: str, name_node: yaml.Node, node: yaml.Node) -> FieldSpec:
        what = f"field {name!r}"
        if not isinstance(node, yaml.MappingNode):
            self._fail(node, f"{what}: must be a mapping such as {{class: email}}")
        pairs = list(self._pairs(node, what))

        field_class: FieldClass | None = None
        for key, _key_node, value_node in pairs:
            if key == "class":
                raw = self._scalar(value_node)
                if not isinstance(raw, str) or raw not in _CLASS_NAMES:
                    known = ", ".join(member.value for member in FieldClass)
                    self._fail(value_node, f"{what}: unknown class {raw!r} (known: {known})")
                field_class = FieldClass(raw)
        if field_class is None:
            self._fail(name_node, f"{what}: missing 'class'")

        searchable = False
        max_length = DEFAULT_MAX_LENGTH[field_class]
        options: dict[str, str] = {}
        for key, key_node, value_node in pairs:
            if key == "class":
                continue
            if key == "searchable":
                value = self._scalar(value_node)
                if not isinstance(value, bool):
                    self._fail(value_node, f"{what}: searchable must be true or false")
                searchable = value
            elif key == "max_length":
                value = self._scalar(value_node)
                if type(value) is not int or not 1 <= value <= MAX_LENGTH_LIMIT:
                    self._fail(
                        value_node,
                        f"{what}: max_length must be an integer in 1..{MAX_LENGTH_LIMIT}",
                    )
                max_length = value
            else:
                allowed = _COMMON_FIELD_KEYS | CLASS_OPTIONS.get(field_class, frozenset())
                if key not in allowed:
                    expected = ", ".join(sorted(allowed))
                    self._fail(
                        key_node,
                        f"{what}: unknown key {key!r} for class {field_class.value!r}"
                        f" (expected {expected})",
                    )
                value = self._scalar(value_node)
                problem = _validate.option_problem(field_class, key, value)
                if problem is not None:
                    self._fail(value_node, f"{what}: {problem}")
                stored = _validate.normalize_option(key, value)
                if stored is not None:
                    options[key] = stored
        return FieldSpec(
            name=name,
            field_class=field_class,
            searchable=searchable,
            max_length=max_length,
            options=options,
        )


class _NotScalar:
    """Stands for a mapping or list where a scalar was expected (fails every type check)."""

    def __repr__(self) -> str:
        return "a mapping or list"
