"""pydantic v2 models of BigID's wire format: Cluster, Column, Attribute, Tag.

Field names are the tutorial's (``../shared/seed/cluster-analysis-api-tutorial.txt``). The models
accept the variants public sources show for the same data (see ``shared/reference/bigid-api.md`` §9):
field aliases (``id``/``clusterId``/``_id``, ``tableName``/``objectName``, ``dataType``/``fieldType``,
``attributes``/``attributeDetails``…), booleans sent as strings (``"true"``, ``"Yes"``), counts sent
as strings, ``null`` where a list is expected, and fields nobody documented yet (kept in
``model_extra`` and, verbatim, in the raw record the store keeps beside the parsed one).

These models are the wire format and nothing else: no HTTP, no storage.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# The largest count we take as one: JSON's safe integers (what a JavaScript or Java producer means
# exactly). Larger numbers are no count of anything and would not fit a 64-bit database column.
MAX_COUNT = 2**53 - 1

# Levels of nesting a record may have. The JSON parser accepts 1,024, but the store serialises a
# record nested deeper than 255 with the standard library, whose recursion gives out near 1,000;
# deeper records are refused, clearly (RecordTooDeep), rather than crashing somewhere downstream.
MAX_DEPTH = 512


class RecordNotStorable(ValueError):
    """A record the store cannot take as it is; ``key`` names it (fqn or id, cut at 80 characters)."""

    def __init__(self, message: str, key: str | None) -> None:
        super().__init__(message)
        self.key = key if key is None or len(key) <= 80 else key[:80] + "…"


class RecordTooDeep(RecordNotStorable):
    """A record nested more than :data:`MAX_DEPTH` levels deep."""

    def __init__(self, key: str | None = None) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} levels deep", key)


# The longest keys the store takes, in UTF-8 bytes: a cluster id and a column's fullyQualifiedName
# together make the membership's primary key, and PostgreSQL refuses an index entry over 2,704
# bytes (the whole snapshot failed there, while SQLite stored it). Real keys are a few dozen bytes.
MAX_CLUSTER_ID_BYTES = 512
MAX_FQN_BYTES = 2048


class RecordKeyTooLong(RecordNotStorable):
    """A record whose key (cluster id or fqn) is longer than the store takes as a key."""

    def __init__(self, key: str, limit: int) -> None:
        super().__init__(f"its key is {len(key.encode()):,} bytes long, more than the {limit:,} stored", key)


def check_key(key: str, limit: int) -> None:
    """Raise :class:`RecordKeyTooLong` when ``key`` is more than ``limit`` UTF-8 bytes (a length
    check first: no encoding for the usual short key)."""
    if len(key) * 4 > limit and len(key.encode()) > limit:
        raise RecordKeyTooLong(key, limit)


def nesting_depth(value: Any) -> int:
    """Levels of lists and objects in ``value`` (0 for a scalar), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


_TRUE = {"true", "yes", "y", "1", "t", "on"}
_FALSE = {"false", "no", "n", "0", "f", "off", ""}


def _to_bool(value: Any) -> Any:
    """Coerce the boolean spellings BigID uses; leave anything else for pydantic to reject."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return value


def coerce_count(value: Any) -> int | None:
    """A count sent as a number or a numeric string, from 0 to :data:`MAX_COUNT`; anything else
    (negative, fractional, astronomically large: no count of anything) means "not given"."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return coerce_count(number) if math.isfinite(number) else None
    return None


def _to_float(value: Any) -> Any:
    if isinstance(value, str):
        stripped = value.strip()
        if stripped == "":
            return None
        try:
            return float(stripped)
        except ValueError:
            return value
    return value


def _to_list(value: Any) -> Any:
    """``null`` and ``{}`` mean "no items", and a ``null`` item is no item; a lone item becomes a
    one-item list."""
    if value is None or value == {}:
        return []
    if isinstance(value, list | tuple):
        return [item for item in value if item is not None]
    return [value]


def _to_str(value: Any) -> Any:
    """Identifiers and names are strings; numbers sent for them are stringified, empty means absent."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


def _to_str_list(value: Any) -> Any:
    items = _to_list(value)
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, dict):  # {"name": "PII"} or {"label": "PII"}
            item = item.get("name") or item.get("label") or item.get("value")
        out.append(_to_str(item))
    return out


def _created_at(value: Any) -> Any:
    """Timestamps may be ISO strings or epoch milliseconds; keep the ISO text as given. A number
    no calendar date stands for (1e308, a year past 9999) is kept as its text: the field only
    informs, and it failed the whole listing as an internal error (OverflowError, OSError).

    MongoDB's extended JSON (``{"$date": "2026-01-01T00:00:00Z"}``, ``{"$date": 1700000000000}``,
    ``{"$date": {"$numberLong": "…"}}``: milliseconds) is unwrapped; any other value (``true``, an
    object, a list) is kept as its JSON text. It is shown nowhere and read by no rule, and one such
    value refused the whole cluster listing (a probe).
    """
    millis = False
    if isinstance(value, dict) and len(value) == 1 and "$date" in value:
        value, millis = value["$date"], True
        if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$numberLong"), str):
            value = value["$numberLong"]
            with contextlib.suppress(ValueError):  # not a number ("--5", "²"): kept as its text
                value = int(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        from datetime import UTC, datetime

        seconds = value / 1000 if millis or value > 10_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            return str(value)
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _items(value: Any, model: type[BaseModel], what: str) -> Any:
    """The items of a list field as :func:`_to_list` gives them, without empty objects (no item,
    as ``null`` is). Raises ValueError for an object with none of ``model``'s fields, in any of
    their spellings: another shape (``{"key": …, "val": …}``, a map of names to values) validated
    as an empty tag, every field being optional, and silently changed every finding about tags.
    Positions are those of the list as sent. (One pass: it runs for every column of a snapshot.)"""
    items = value if value.__class__ is list else list(value) if isinstance(value, tuple) else _to_list(value)
    if not isinstance(items, list):
        return items
    keys = _spellings(model)
    out = []
    for position, item in enumerate(items):
        if item is None:
            continue
        if isinstance(item, dict):
            if not item:
                continue
            if keys.isdisjoint(item):
                got = ", ".join(sorted(str(k)[:40] for k in item)[:5])
                raise ValueError(
                    f"{what} {position} has none of the fields of {_FIELDS[what]}; its keys: {got})"
                )
        out.append(item)
    return out


_FIELDS = {
    "tag": "a tag (tagName, tagValue, tagId, valueId, …",
    "attribute": "an attribute (attribute_name, rank, …",
}


@functools.cache
def _spellings(model: type[BaseModel]) -> frozenset[str]:
    """Every key that fills a field of ``model``: the field names and their validation aliases."""
    return frozenset(key for name in model.model_fields for key in field_spellings(model, name))


def field_spellings(model: type[BaseModel], name: str) -> tuple[str, ...]:
    """The keys that fill the field ``name`` of ``model``: its name, then its validation aliases."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        aliases = [choice for choice in alias.choices if isinstance(choice, str)]
    else:
        aliases = [alias] if isinstance(alias, str) else []
    return tuple(dict.fromkeys([name, *aliases]))


def _empty_map(value: Any) -> Any:
    return None if value == [] else value


def _tags(value: Any) -> Any:
    return _items(value, Tag, "tag")


Bool = Annotated[bool | None, BeforeValidator(_to_bool)]
# A count the API announces (a cluster's ``size``, like ``totalCount``): only a hint, so a value that
# is no count of anything is "not given" rather than a reason to refuse the listing.
Count = Annotated[int | None, BeforeValidator(coerce_count)]
Float = Annotated[float | None, BeforeValidator(_to_float)]
Str = Annotated[str | None, BeforeValidator(_to_str)]
StrList = Annotated[list[str], BeforeValidator(_to_str_list)]


class _Wire(BaseModel):
    """Common configuration: accept aliases and field names alike; unknown fields are ignored here
    because the store keeps every record verbatim (``raw``), so nothing is ever dropped, and keeping
    them on the model too would cost a third of the validation time.

    Scalars rely on pydantic's lax mode, which already accepts the spellings BigID sends
    (``"true"``/``"Yes"``/``1`` for booleans, ``"0.69"`` for floats, numbers for strings) and runs
    in compiled code; Python validators are kept for shapes lax mode does not cover (null lists,
    bare attribute names), because a page of 10,000 columns is validated in one call.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class TagProperties(_Wire):
    hidden: bool | None = None
    applicationType: str | None = Field(
        default=None, validation_alias=AliasChoices("applicationType", "application_type")
    )


class Tag(_Wire):
    """A tag on a column, e.g. ``sensitivity`` = ``high``."""

    tagId: str | None = Field(default=None, validation_alias=AliasChoices("tagId", "tag_id"))
    valueId: str | None = Field(default=None, validation_alias=AliasChoices("valueId", "value_id"))
    isMutuallyExclusive: bool | None = Field(
        default=None, validation_alias=AliasChoices("isMutuallyExclusive", "is_mutually_exclusive")
    )
    # [] is how PHP and some JavaScript encoders write an empty map
    properties: Annotated[TagProperties | None, BeforeValidator(_empty_map)] = None
    tagName: str | None = Field(default=None, validation_alias=AliasChoices("tagName", "tag_name", "name"))
    tagValue: str | None = Field(
        default=None, validation_alias=AliasChoices("tagValue", "tag_value", "value")
    )


class Attribute(_Wire):
    """A classification attribute found in a column, e.g. ``SSN`` with rank ``High``."""

    attribute_original_name: str | None = Field(
        default=None, validation_alias=AliasChoices("attribute_original_name", "attributeOriginalName")
    )
    attribute_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("attribute_name", "attributeName", "name", "classificationName"),
    )
    # The observed catalog shape {name, count, ranks: ["HIGH"], type} sends a list of ranks (and,
    # on object-level details, a list of types): kept as sent here, made one value by the writer
    # (:func:`auditor.store.writer.one_rank`, ``one_text``), in compiled validation.
    rank: str | list[str] | None = Field(default=None, validation_alias=AliasChoices("rank", "ranks"))
    # A number, or text: "0.69", or a percentage "69.5%" (made a fraction by the writer,
    # :func:`auditor.store.writer.confidence`): a "%" failed the whole cluster. A yes/no value is
    # kept as one (the writer stores it as no confidence): as a float, true became 1.0.
    calc_confidence_level: bool | float | str | None = Field(
        default=None,
        validation_alias=AliasChoices("calc_confidence_level", "calcConfidenceLevel", "confidence_level"),
    )
    attribute_type: str | list[str] | None = Field(
        default=None, validation_alias=AliasChoices("attribute_type", "attributeType", "type")
    )
    attribute_id: str | None = Field(
        default=None, validation_alias=AliasChoices("attribute_id", "attributeId")
    )


# What a field of several types accepts, in words, by every spelling of its name. A value none of
# them takes is reported by pydantic once per type, located at the type's tag: the message was
# "calc_confidence_level.bool: Input should be a valid boolean" for a confidence sent as [0.5].
_ACCEPTS = {
    "calc_confidence_level": 'a number, a numeric string or a percentage (0.69, "0.69" or "69%")',
    "rank": "a string or a list of strings",
    "attribute_type": "a string or a list of strings",
}
UNION_ACCEPTS: dict[str, str] = {
    str(spelling): words
    for name, words in _ACCEPTS.items()
    for spelling in (name, *getattr(Attribute.model_fields[name].validation_alias, "choices", ()))
}


def _attributes(value: Any) -> Any:
    """Attributes may be objects or bare names (``["classifier.Email"]``)."""
    items = _items(value, Attribute, "attribute")
    if isinstance(items, list):
        return [{"attribute_name": item} if isinstance(item, str) else item for item in items]
    return items


class Column(_Wire):
    """One column of a cluster, identified within the cluster by ``fullyQualifiedName``."""

    fullyQualifiedName: str = Field(
        min_length=1,
        validation_alias=AliasChoices("fullyQualifiedName", "fully_qualified_name", "fqn"),
    )
    columnName: str | None = Field(
        default=None, validation_alias=AliasChoices("columnName", "column_name", "fieldName")
    )
    businessAttribute: str | None = Field(
        default=None, validation_alias=AliasChoices("businessAttribute", "business_attribute")
    )
    tableName: str | None = Field(
        default=None, validation_alias=AliasChoices("tableName", "objectName", "table_name")
    )
    source: str | None = Field(
        default=None, validation_alias=AliasChoices("source", "dataSourceName", "source_name")
    )
    isPrimary: bool | None = Field(default=None, validation_alias=AliasChoices("isPrimary", "is_primary"))
    dataType: str | None = Field(
        default=None, validation_alias=AliasChoices("dataType", "fieldType", "data_type")
    )
    attributes: Annotated[list[Attribute], BeforeValidator(_attributes)] = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "attributes", "attributeDetails", "attribute_details", "fieldClassifications"
        ),
    )
    tags: Annotated[list[Tag], BeforeValidator(_tags)] = Field(default_factory=list)


class Cluster(_Wire):
    """A cluster of similar columns as ``GET /api/v1/clusters`` lists it.

    Clusters are few, so their unknown fields are also kept on the model (``model_extra``).
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, coerce_numbers_to_str=True)

    id: str = Field(validation_alias=AliasChoices("id", "clusterId", "_id", "cluster_id"))
    name: Str = Field(default=None, validation_alias=AliasChoices("name", "clusterName", "cluster_name"))
    size: Count = None
    labels: StrList = Field(default_factory=list)
    severity: Str = None
    status: Str = None
    createdAt: Annotated[str | None, BeforeValidator(_created_at)] = Field(
        default=None, validation_alias=AliasChoices("createdAt", "created_at", "creationDate")
    )
    type: Annotated[
        str | None, BeforeValidator(lambda v: ",".join(map(str, v)) if isinstance(v, list) else v)
    ] = None

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        """An id of spaces would be sent as ``clusterId=+++``, which a lenient tenant answers."""
        if not value.strip():
            raise ValueError("the cluster id is empty or blank")
        return value

    @model_validator(mode="before")
    @classmethod
    def _ids_are_strings(cls, data: Any) -> Any:
        """``id`` may arrive as a number, or as a MongoDB ObjectId in extended JSON
        (``{"$oid": "65b2…"}``); identifiers are strings for us."""
        if isinstance(data, dict):
            for key in ("id", "clusterId", "_id", "cluster_id"):
                value = data.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    data = {**data, key: str(value)}
                elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$oid"), str):
                    data = {**data, key: value["$oid"]}
        return data


def parse_cluster(raw: Any) -> Cluster:
    """Validate one cluster record (numbers as ids are accepted and stringified)."""
    return Cluster.model_validate(_without_null_aliases(raw, _CLUSTER_ALIASES) if type(raw) is dict else raw)


def parse_column(raw: Any) -> Column:
    """Validate one column record, as :func:`parse_columns` validates each of a page (raises
    pydantic's ``ValidationError``, titled ``Column`` and located from the record's own fields)."""
    row = _column_for_model(raw)
    try:
        return _column_adapter.validate_python(row)
    except ValidationError:
        return _column_adapter.validate_python(_tolerant([row])[0])


_column_adapter: TypeAdapter[Column] = TypeAdapter(Column)
_columns_adapter: TypeAdapter[list[Column]] = TypeAdapter(list[Column])
_clusters_adapter: TypeAdapter[list[Cluster]] = TypeAdapter(list[Cluster])

# Scalar fields whose empty string means "absent" (lax mode rejects "" for booleans and floats).
_EMPTY_MEANS_NONE = frozenset(
    {
        "isPrimary",
        "is_primary",
        "isMutuallyExclusive",
        "is_mutually_exclusive",
        "hidden",
        "calc_confidence_level",
        "calcConfidenceLevel",
        "confidence_level",
    }
)


def _tolerant(value: Any) -> Any:
    """A copy of a raw record with the rarer spellings lax mode rejects made acceptable:
    ``""`` for a boolean or float means absent; a boolean where text is expected becomes text."""
    if isinstance(value, list):
        return [_tolerant(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key in _EMPTY_MEANS_NONE:
            out[key] = None if isinstance(item, str) and not item.strip() else item
        elif isinstance(item, bool):
            out[key] = str(item).lower()
        else:
            out[key] = _tolerant(item)
    return out


def _alias_groups(model: type[BaseModel]) -> tuple[tuple[str, ...], ...]:
    """The spellings of each field of ``model`` that has more than one."""
    groups = []
    for field in model.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and len(alias.choices) > 1:
            groups.append(tuple(str(choice) for choice in alias.choices))
    return tuple(groups)


_CLUSTER_ALIASES = _alias_groups(Cluster)
_COLUMN_ALIASES = _alias_groups(Column)
_NESTED = (
    (("tags",), _alias_groups(Tag)),
    (
        ("attributes", "attributeDetails", "attribute_details", "fieldClassifications"),
        _alias_groups(Attribute),
    ),
)


def _other_spellings(groups: tuple[tuple[str, ...], ...]) -> frozenset[str]:
    """Every spelling but the first of each field: a record holding none of them has at most one
    spelling of each field, so no null spelling can hide another (the usual case, checked fast)."""
    return frozenset(name for names in groups for name in names[1:])


_COLUMN_OTHERS = _other_spellings(_COLUMN_ALIASES)
_NESTED_OTHERS = tuple((keys, groups, _other_spellings(groups)) for keys, groups in _NESTED)


def _without_null_aliases(record: dict[str, Any], groups: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """``record`` without the spellings of a field that are null (or an empty list) while another
    spelling has a value.

    pydantic takes the first spelling present, so ``{"tableName": null, "objectName": "T"}`` would
    read as no table at all. Returns ``record`` itself when there is nothing to drop.
    """
    out = record
    for names in groups:
        present = [name for name in names if name in record]
        if len(present) < 2:
            continue
        # a null gives way to any value; an empty list (or object) only to a list that holds
        # something (not to "n/a" in another spelling, read as an attribute named so)
        filled = [name for name in present if not _blank(record[name])]
        listed = any(type(record[name]) is list for name in filled)
        for name in present:
            value = record[name]
            if filled and (value is None or (listed and _blank(value))):
                if out is record:
                    out = dict(record)
                del out[name]
    return out


def _blank(value: Any) -> bool:
    """No value: null, an empty object, or a list of nothing but such (``attributes: []``, ``[{}]``
    or ``[null]`` beside ``attributeDetails: [{…}]`` hid the attributes the other spelling held)."""
    if value is None or (type(value) is dict and not value):
        return True
    return type(value) is list and all(item is None or (type(item) is dict and not item) for item in value)


def _column_for_model(row: Any) -> Any:
    """A column record as the model should read it (:func:`_without_null_aliases`, nested too).

    On a snapshot's hot path (once per column, in the decoding processes): a record and its tags
    and attributes that use one spelling per field, as BigID's do, are passed through after one
    set test each.
    """
    if type(row) is not dict:
        return row
    out = row if _COLUMN_OTHERS.isdisjoint(row) else _without_null_aliases(row, _COLUMN_ALIASES)
    for keys, groups, others in _NESTED_OTHERS:
        for key in keys:
            items = out.get(key)
            if type(items) is not list:
                continue
            for item in items:
                if type(item) is dict and not others.isdisjoint(item):
                    break
            else:
                continue
            if out is row:
                out = dict(row)
            out[key] = [_without_null_aliases(i, groups) if type(i) is dict else i for i in items]
    return out


def parse_columns(rows: list[Any]) -> list[Column]:
    """Validate a page of column records in one call (raises pydantic's ``ValidationError``).

    The fast path validates the page as received (with null spellings of a field set aside when
    another spelling has its value); only a page that fails is validated again after
    :func:`_tolerant` normalisation, and the error of that second attempt is the one raised.
    """
    rows = [_column_for_model(row) for row in rows]
    try:
        return _columns_adapter.validate_python(rows)
    except ValidationError:
        return _columns_adapter.validate_python(_tolerant(rows))


def parse_clusters(rows: list[Any]) -> list[Cluster]:
    """Validate a page of cluster records in one call (raises pydantic's ``ValidationError``)."""
    rows = [_without_null_aliases(r, _CLUSTER_ALIASES) if type(r) is dict else r for r in rows]
    return _clusters_adapter.validate_python(rows)
