"""The versioned record schema: fields, their classes, validation and blind-index forms.

A schema file (YAML) maps each field name to a :class:`FieldClass`, says whether it is
searchable (exact match through a blind index) and may override the maximum length::

    schema_version: 1
    fields:
      email:  {class: email, searchable: true}
      mobile: {class: phone, searchable: true, default_region: GB}
      ssn:    {class: national_id, searchable: true, format: us.ssn}
      notes:  {class: free_text, max_length: 8192}

:func:`load_schema` reads one (``None``: the default shipped as ``vault/schema/default.yaml``);
:meth:`RecordSchema.validate` turns values into canonical forms and
:meth:`RecordSchema.index_form` gives the bytes to key a blind index or deterministic token with.

Default maximum lengths, in characters (code points) of the value as given and of its canonical
form; a field may set ``max_length`` (1..65536) instead. The same table is in ``README.md``.

=============== ======= ===========================================================
class           maximum canonical form
=============== ======= ===========================================================
email           254     email-validator's ``normalized`` (domain lower-case Unicode)
phone           32      E.164 (``+442079460958``)
name            256     NFC, outer whitespace stripped
address         1024    NFC, outer whitespace stripped
date_of_birth   10      ``YYYY-MM-DD``, 1900-01-01 .. today
national_id     32      compact upper case (or the python-stdnum ``format``'s compact)
card_number     32      digits only, 12..19 of them, Luhn-valid
iban            42      compact upper case, checksum and country format valid
free_text       4096    the value itself, NFC
=============== ======= ===========================================================

Every class refuses non-strings, empty values, lone surrogates and control characters (tab, line
feed and carriage return are allowed in ``address`` and ``free_text`` only). Errors are
:class:`vault.errors.InvalidInput` naming the field, never the value.
"""

from vault.schema._load import DEFAULT_SCHEMA_SOURCE, load_schema
from vault.schema._model import DEFAULT_MAX_LENGTH, MAX_LENGTH_LIMIT, FieldClass, FieldSpec
from vault.schema._record import RecordSchema
from vault.schema._validate import canonicalize, index_form_of_canonical

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_SCHEMA_SOURCE",
    "MAX_LENGTH_LIMIT",
    "FieldClass",
    "FieldSpec",
    "RecordSchema",
    "canonicalize",
    "index_form_of_canonical",
    "load_schema",
]
