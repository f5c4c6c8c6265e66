"""Loading schema files: the packaged default, and errors that name the file and line."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.errors import ConfigError
from vault.schema import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_SCHEMA_SOURCE,
    FieldClass,
    FieldSpec,
    RecordSchema,
    load_schema,
)
from vault.schema._load import MAX_SCHEMA_BYTES, parse_schema


def write(tmp_path: Path, text: str | bytes, name: str = "schema.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_schema(path)
    return info.value


# -- the packaged default -------------------------------------------------------------------------


def test_default_schema_loads() -> None:
    schema = load_schema()
    assert schema.version == 1
    assert schema.source == DEFAULT_SCHEMA_SOURCE
    assert schema.field_classes == frozenset(FieldClass)
    assert schema.spec("email").searchable
    assert schema.spec("phone").options == {}  # no default region: E.164 only
    assert schema.spec("notes").max_length == 8192
    assert schema.spec("full_name").max_length == DEFAULT_MAX_LENGTH[FieldClass.NAME]


def test_default_schema_is_a_package_resource() -> None:
    resource = importlib.resources.files("vault.schema").joinpath("default.yaml")
    assert resource.is_file()
    assert load_schema(Path(str(resource))).fields == load_schema().fields


def test_path_may_be_str_or_pathlike(tmp_path: Path) -> None:
    path = write(tmp_path, "schema_version: 2\nfields:\n  email: {class: email}\n")
    assert load_schema(str(path)) == load_schema(path)
    assert load_schema(path).source == str(path)
    assert load_schema(path).version == 2


def test_block_style_and_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
schema_version: 1
fields:
  mobile:
    class: phone
    searchable: yes
    default_region: gb
  ssn:
    class: national_id
    format: us.ssn
    max_length: 11
  aadhaar:
    class: national_id
    format: in.aadhaar     # stdnum spells the module in_ (a Python keyword)
  landline:
    class: phone
    default_region: null
""",
    )
    schema = load_schema(path)
    assert schema.spec("mobile") == FieldSpec(
        "mobile", FieldClass.PHONE, True, 32, {"default_region": "GB"}
    )
    assert schema.spec("ssn") == FieldSpec(
        "ssn", FieldClass.NATIONAL_ID, False, 11, {"format": "us.ssn"}
    )
    assert schema.validate({"aadhaar": "2341 2341 2346"}) == {"aadhaar": "234123412346"}
    assert schema.spec("landline").options == {}


# -- errors name the file and the line ------------------------------------------------------------


def test_example_from_the_docs(tmp_path: Path) -> None:
    lines = ["schema_version: 1", "fields:"]
    lines += [f"  field_{i}: {{class: name}}" for i in range(9)]
    lines += ["  mobile: {class: phonee}"]  # line 12
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert str(load_error(path)).startswith(f"{path}:12: field 'mobile': unknown class 'phonee'")


BAD_SCHEMAS: list[tuple[str, int | None, str]] = [
    # (file text, line or None, expected part of the message)
    ("schema_version: 1\nversoin: 2\nfields: {a: {class: name}}\n", 2, "unknown top-level key"),
    ("fields:\n  email: {class: email}\n", None, "missing 'schema_version'"),
    ("schema_version: 1\n", None, "missing 'fields'"),
    ("schema_version: 0\nfields: {a: {class: name}}\n", 1, "schema_version must be"),
    ("schema_version: '1'\nfields: {a: {class: name}}\n", 1, "schema_version must be"),
    ("schema_version: 1.5\nfields: {a: {class: name}}\n", 1, "schema_version must be"),
    ("schema_version: true\nfields: {a: {class: name}}\n", 1, "schema_version must be"),
    ("schema_version: 1\nfields: {}\n", 2, "at least one field"),
    ("schema_version: 1\nfields: [email]\n", 2, "'fields' must be a mapping"),
    ("schema_version: 1\nfields:\n  email: email\n", 3, "must be a mapping"),
    ("schema_version: 1\nfields:\n  email: {searchable: true}\n", 3, "missing 'class'"),
    ("schema_version: 1\nfields:\n  email: {class: [email]}\n", 3, "unknown class"),
    (
        "schema_version: 1\nfields:\n  email: {class: email}\n  email: {class: name}\n",
        4,
        "duplicate key 'email'",
    ),
    (
        "schema_version: 1\nfields:\n  email:\n    class: email\n    serchable: true\n",
        5,
        "field 'email': unknown key 'serchable' for class 'email'",
    ),
    (
        "schema_version: 1\nfields:\n  email: {class: email, format: us.ssn}\n",
        3,
        "unknown key 'format' for class 'email'",
    ),
    (
        "schema_version: 1\nfields:\n  notes:\n    class: free_text\n    max_length: 0\n",
        5,
        "max_length must be an integer in 1..65536",
    ),
    (
        "schema_version: 1\nfields:\n  notes: {class: free_text, max_length: 65537}\n",
        3,
        "max_length must be",
    ),
    ("schema_version: 1\nfields:\n  n: {class: name, max_length: '10'}\n", 3, "max_length must"),
    ("schema_version: 1\nfields:\n  n: {class: name, max_length: true}\n", 3, "max_length must"),
    ("schema_version: 1\nfields:\n  n: {class: name, searchable: maybe}\n", 3, "true or false"),
    ("schema_version: 1\nfields:\n  Email: {class: email}\n", 3, "field name 'Email' must match"),
    ("schema_version: 1\nfields:\n  1st: {class: email}\n", 3, "must match"),
    ("schema_version: 1\nfields:\n  e-mail: {class: email}\n", 3, "must match"),
    (f"schema_version: 1\nfields:\n  {'a' * 64}: {{class: email}}\n", 3, "must match"),
    ("schema_version: 1\nfields:\n  42: {class: email}\n", 3, "keys must be strings"),
    (
        "schema_version: 1\nfields:\n  ssn: {class: national_id, format: us.nope}\n",
        3,
        "unknown national id format 'us.nope'",
    ),
    # python-stdnum (2.2) has no UK National Insurance number module
    (
        "schema_version: 1\nfields:\n  nino: {class: national_id, format: gb.nino}\n",
        3,
        "unknown national id format 'gb.nino'",
    ),
    (
        "schema_version: 1\nfields:\n  ssn: {class: national_id, format: util}\n",
        3,
        "unknown national id format 'util'",
    ),
    (
        "schema_version: 1\nfields:\n  ssn: {class: national_id, format: ../os}\n",
        3,
        "unknown national id format",
    ),
    (
        "schema_version: 1\nfields:\n  m: {class: phone, default_region: XX}\n",
        3,
        "default_region must be null or a region code",
    ),
    ("schema_version: 1\nfields:\n  m: {class: phone, default_region: 44}\n", 3, "default_region"),
    # YAML-level problems keep yaml's line
    ("schema_version: 1\nfields:\n  email: {class: email\n", 4, "expected ',' or '}'"),
    ("schema_version: 1\nfields:\n\temail: {class: email}\n", 3, "found character '\\t'"),
    (
        "schema_version: !!python/name:os.system\nfields: {a: {class: name}}\n",
        1,
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
    ),
    # a python tag on a node never constructed (only scalars are) is just the wrong shape
    ("schema_version: 1\nfields: !!python/object/apply:os.system [x]\n", 2, "must be a mapping"),
    ("schema_version: 1\nfields:\n  <<: {email: {class: email}}\n", 3, "merge keys (<<)"),
    ("- schema_version\n- fields\n", 1, "top level must be a mapping"),
    ("schema_version: 1\nfields: {a: {class: name}}\n# bell \x07\n", 3, "U+0007 is not allowed"),
    ("", None, "schema file is empty"),
    ("# nothing but a comment\n", None, "schema file is empty"),
    ("a: 1\n---\nb: 2\n", 2, "expected a single document in the stream, but found another"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_SCHEMAS)
def test_bad_schema_names_file_and_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path, text)
    error = str(load_error(path))
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert error.startswith(where), error
    assert message in error, error


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert str(load_error(path)) == f"{path}: cannot read schema file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert str(load_error(tmp_path)).startswith(f"{tmp_path}: cannot read schema file")


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"schema_version: 1\nfields: {caf\xe9: {class: name}}\n")
    assert str(load_error(path)) == f"{path}: schema file is not UTF-8 text"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfschema_version: 1\nfields: {a: {class: name}}\n")
    assert load_schema(path).version == 1


def test_oversized_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * MAX_SCHEMA_BYTES + "\n")
    assert "larger than" in str(load_error(path))


def test_aliases_are_shared_not_expanded(tmp_path: Path) -> None:
    text = """\
schema_version: 1
fields:
  home_phone: &phone {class: phone, searchable: true, default_region: GB}
  work_phone: *phone
"""
    schema = load_schema(write(tmp_path, text))
    assert schema.spec("work_phone").options == {"default_region": "GB"}
    assert schema.spec("work_phone").name == "work_phone"


# -- building schemas in code ---------------------------------------------------------------------


def test_record_schema_checks_itself() -> None:
    email = FieldSpec("email", FieldClass.EMAIL, True, 254, {})
    with pytest.raises(ValueError, match="version"):
        RecordSchema(version=0, fields={"email": email}, source="<code>")
    with pytest.raises(ValueError, match="at least one field"):
        RecordSchema(version=1, fields={}, source="<code>")
    with pytest.raises(ValueError, match="FieldSpec named"):
        RecordSchema(version=1, fields={"mail": email}, source="<code>")
    bad_region = FieldSpec("m", FieldClass.PHONE, False, 32, {"default_region": "XX"})
    with pytest.raises(ValueError, match="default_region"):
        RecordSchema(version=1, fields={"m": bad_region}, source="<code>")
    bad_key = FieldSpec("e", FieldClass.EMAIL, False, 32, {"default_region": "GB"})
    with pytest.raises(ValueError, match="unknown key"):
        RecordSchema(version=1, fields={"e": bad_key}, source="<code>")


def test_field_spec_checks_itself_and_is_immutable() -> None:
    with pytest.raises(ValueError, match="field name"):
        FieldSpec("Email", FieldClass.EMAIL, True, 254, {})
    with pytest.raises(ValueError, match="max_length"):
        FieldSpec("email", FieldClass.EMAIL, True, 0, {})
    with pytest.raises(TypeError):
        FieldSpec("email", "email", True, 254, {})  # type: ignore[arg-type]
    options = {"default_region": "GB"}
    spec = FieldSpec("m", FieldClass.PHONE, False, 32, options)
    options["default_region"] = "US"
    assert spec.options == {"default_region": "GB"}
    with pytest.raises(TypeError):
        spec.options["default_region"] = "US"  # type: ignore[index]
    assert hash(spec) == hash(FieldSpec("m", FieldClass.PHONE, False, 32, {"default_region": "GB"}))


def test_record_schema_is_immutable() -> None:
    schema = load_schema()
    with pytest.raises(TypeError):
        schema.fields["x"] = schema.spec("email")  # type: ignore[index]
    with pytest.raises(AttributeError):
        schema.version = 2  # type: ignore[misc]


VALID_FILE = """\
schema_version: 1
fields:
  email: {class: email, searchable: true}
  mobile: {class: phone, default_region: GB}
"""


@settings(max_examples=300, deadline=None, database=None)
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.text("{}[]:,-&*!|>'\"#\n\t abc1_%@`?<=~\x00", max_size=100),
        # a valid file with a few characters spliced in somewhere
        st.tuples(st.integers(0, len(VALID_FILE)), st.text(max_size=5)).map(
            lambda cut: VALID_FILE[: cut[0]] + cut[1] + VALID_FILE[cut[0] :]
        ),
    )
)
def test_any_text_gives_a_schema_or_a_config_error(text: str) -> None:
    try:
        parse_schema(text, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith("fuzz.yaml")
