"""The versioned JSON documents NeurFlow writes (circuit, atlas, audit, reviews, diff, experiments).

Each document is a msgspec Struct whose ``schema`` field names its version. :class:`Document` gives them
one writer, one reader and one JSON Schema: the reader looks at the version before it decodes the rest,
so a document of another kind or a newer version is refused with a message naming the versions this
one reads, instead of failing on some field; older versions a type still reads are upgraded by its
``_upgrade`` before they are validated.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import msgspec

D = TypeVar("D", bound="Document")


class Document(msgspec.Struct):
    #: the version this code writes (the ``schema`` field's value).
    SCHEMA: ClassVar[str]
    #: older versions still read, each turned into the current one by :meth:`_upgrade`.
    OLDER: ClassVar[tuple[str, ...]] = ()
    #: what the document is, in messages: "circuit" gives "invalid circuit document: ...".
    KIND: ClassVar[str]

    def to_json(self, indent: int = 1) -> str:
        raw = msgspec.json.encode(self)
        return msgspec.json.format(raw, indent=indent).decode() if indent else raw.decode()

    @classmethod
    def from_json(cls: type[D], text: str | bytes) -> D:
        """Parse and validate a document; ``ValueError`` naming what is wrong."""
        try:
            head = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"{cls.KIND} document is not valid JSON: {exc}") from None
        version = head.get("schema") if isinstance(head, dict) else None
        readable = (*cls.OLDER, cls.SCHEMA)
        if version not in readable:
            raise ValueError(f"unsupported {cls.KIND} schema {version!r}; this version reads {', '.join(readable)}")
        try:
            if version == cls.SCHEMA:
                return msgspec.json.decode(text, type=cls)
            return msgspec.convert(cls._upgrade(head, version), cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid {cls.KIND} document: {exc}") from None

    @classmethod
    def _upgrade(cls, head: dict[str, Any], version: str) -> dict[str, Any]:
        """``head`` (a document of an ``OLDER`` version) as the current version's builtins."""
        raise NotImplementedError(f"{cls.__name__} reads no older version")

    @classmethod
    def json_schema(cls, title: str) -> dict[str, Any]:
        """The JSON Schema of this document type, generated from its Structs."""
        schema = msgspec.json.schema(cls)
        schema["$id"] = f"https://neurflow.dev/schemas/{cls.SCHEMA.replace('/', '-')}.json"
        schema["title"] = f"{title} ({cls.SCHEMA})"
        return schema
