from pathlib import Path

import pytest

from neurflow.labeler.vocabulary import builtin_vocabularies, load_templates, load_vocabulary


def test_builtin_general_vocabulary_covers_the_kinds_of_concepts():
    vocab = load_vocabulary("builtin:general")
    assert 500 <= len(vocab) <= 5000
    for concept in ("red", "striped", "checkerboard", "circle", "wood", "wheel", "dog", "kitchen", "red circle"):
        assert concept in vocab.concepts, concept
    assert len({c.lower() for c in vocab.concepts}) == len(vocab)


def test_builtin_imagenet_has_the_thousand_classes_in_order():
    vocab = load_vocabulary("builtin:imagenet1k")
    assert len(vocab) == 1000
    assert vocab.concepts[0] == "tench" and vocab.concepts[207] == "Golden Retriever"
    assert set(builtin_vocabularies()) >= {"general", "imagenet1k"}


def test_file_vocabulary_skips_comments_and_blank_lines(tmp_path: Path):
    path = tmp_path / "v.txt"
    path.write_text("# colours\nred\n\n  blue  \n# shapes\nsmall   circle\n")
    vocab = load_vocabulary(str(path))
    assert vocab.concepts == ("red", "blue", "small circle")
    assert vocab.digest != load_vocabulary(["red", "blue"]).digest


@pytest.mark.parametrize(
    "spec, message",
    [
        ([], "is empty"),
        (["red"], "at least two"),
        (["red", "Red", "blue", "blue "], "2 duplicate concept(s)"),
        ("builtin:nope", "unknown built-in vocabulary"),
        ("/no/such/vocab.txt", "does not exist"),
    ],
)
def test_bad_vocabularies_are_clear_errors(spec, message):
    with pytest.raises(ValueError) as info:
        load_vocabulary(spec)
    assert message in str(info.value)


def test_empty_vocabulary_file_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="is empty"):
        load_vocabulary(path)


def test_templates():
    assert len(load_templates("builtin:default")) >= 4
    assert load_templates(["a {}", "a {}", "the {}"]) == ("a {}", "the {}")
    with pytest.raises(ValueError, match="exactly one"):
        load_templates(["{} and {}"])
    with pytest.raises(ValueError, match="unknown built-in templates"):
        load_templates("builtin:fancy")
