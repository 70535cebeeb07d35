"""The versioned documents share one reader: each refuses the others' documents and unknown versions."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from neurflow.atlas.document import Atlas
from neurflow.core.audit import Audit, Reviews
from neurflow.core.circuit import Circuit
from neurflow.core.diff import CircuitDiff
from neurflow.core.documents import Document
from neurflow.core.experiments.results import ExperimentResults

DOCUMENTS = [Circuit, Atlas, Audit, Reviews, CircuitDiff, ExperimentResults]


class Note(Document, forbid_unknown_fields=True):
    SCHEMA: ClassVar[str] = "test.note/2"
    OLDER: ClassVar[tuple[str, ...]] = ("test.note/1",)
    KIND: ClassVar[str] = "note"

    schema: str
    text: str

    @classmethod
    def _upgrade(cls, head: dict[str, Any], version: str) -> dict[str, Any]:
        return {"schema": cls.SCHEMA, "text": head.get("body")}


def test_current_and_older_versions_read_and_round_trip():
    note = Note(schema=Note.SCHEMA, text="hi")
    assert Note.from_json(note.to_json()) == note == Note.from_json(note.to_json(indent=0))
    assert Note.from_json('{"schema": "test.note/1", "body": "hi"}') == note


@pytest.mark.parametrize("text, message", [
    ("{nope", "note document is not valid JSON"),
    ("[1, 2]", "unsupported note schema None; this version reads test.note/1, test.note/2"),
    ('{"schema": "test.note/3", "text": "x"}', "unsupported note schema 'test.note/3'"),
    ('{"schema": "test.note/2", "text": 5}', r"invalid note document: Expected `str`, got `int` - at `\$.text`"),
    ('{"schema": "test.note/1", "text": "x"}', "invalid note document"),
])
def test_bad_documents_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        Note.from_json(text)


@pytest.mark.parametrize("reader", DOCUMENTS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("writer", DOCUMENTS, ids=lambda d: d.__name__)
def test_no_document_reads_as_another_kind(reader, writer):
    """Before the shared reader, experiments.json decoded any object of the right fields, whatever its schema."""
    if reader is writer:
        return
    with pytest.raises(ValueError, match=f"unsupported {reader.KIND} schema {writer.SCHEMA!r}"):
        reader.from_json(msgspec.json.encode({"schema": writer.SCHEMA}))


def test_every_document_names_its_version_in_its_json_schema():
    for doc in DOCUMENTS:
        schema = doc.json_schema("title")
        assert schema["title"] == f"title ({doc.SCHEMA})" and doc.SCHEMA.replace("/", "-") in schema["$id"]
