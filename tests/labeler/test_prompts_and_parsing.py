import pytest

from neurflow.labeler.captioning.base import CaptionerError, mosaic, parse_caption, parse_features
from neurflow.labeler.captioning.summarize import rule_based_label, summarize_caption
from neurflow.prompts import available, load_prompt


def test_prompts_are_versioned_files():
    versions = available()
    assert {"group_caption", "circuit_caption", "label_summary"} <= set(versions)
    p = load_prompt("group_caption")
    assert p.id == "group_caption" and p.version == versions["group_caption"][-1]
    assert load_prompt("group_caption@1").version == "1"
    system, user = p.render(n_images=5)
    assert "captioning" in system and "5 images" in user and "Caption:" in user and "$" not in user


def test_circuit_prompt_describes_the_groups():
    system, user = load_prompt("circuit_caption").render(n_groups=3)
    assert "Group 1 is a higher-level concept" in user and "Groups 2 to 3" in user and "There is no match" in user


def test_prompt_errors():
    with pytest.raises(ValueError, match="unknown prompt"):
        load_prompt("haiku")
    with pytest.raises(ValueError, match="no version '9'"):
        load_prompt("group_caption", "9")
    with pytest.raises(ValueError, match=r"needs a value for \$n_images"):
        load_prompt("group_caption").render()


def test_parse_caption_and_features():
    answer = "Features: red colour, round shape\nCaption: Red circles on a grey background."
    assert parse_caption(answer) == "Red circles on a grey background."
    assert parse_features(answer) == ["red colour", "round shape"]
    assert parse_caption("  Just a sentence   about stripes. ") == "Just a sentence about stripes."
    assert parse_caption("**Caption:** bold stripes") == "bold stripes"
    with pytest.raises(CaptionerError, match="empty"):
        parse_caption("   ")


@pytest.mark.parametrize(
    "caption, label",
    [
        ("The images show red circles on a grey background.", "red circles"),
        ("All patches share a striped black and white texture.", "striped black and white"),
        ("A yellow star with five points.", "yellow star"),
        ("Dog snouts in close-up.", "dog snouts"),
    ],
)
def test_rule_based_label_keeps_the_leading_noun_phrase(caption, label):
    assert rule_based_label(caption) == label


def test_summary_prefers_the_first_feature_and_the_model():
    answer = "Features: checkered pattern, black squares\nCaption: A checkered pattern of black and white squares."
    assert rule_based_label(parse_caption(answer), answer) == "checkered pattern"

    class Model:
        def complete_text(self, system, user):
            assert "Caption:" in user
            return "Checkered Texture."

    assert summarize_caption("A checkered pattern.", None, Model()) == ("checkered texture", "model")

    class Chatty:
        def complete_text(self, system, user):
            return "Well, it is hard to say, but I would call this a kind of checkered pattern overall"

    assert summarize_caption("A checkered pattern of squares.", None, Chatty()) == ("checkered pattern of squares", "rules")


def test_mosaic_lays_out_one_row_per_set():
    from PIL import Image

    sets = [[Image.new("RGB", (10, 10), "red")] * 3, [Image.new("RGB", (10, 10), "blue")] * 2]
    canvas = mosaic(sets, tile=20, gap=2)
    assert canvas.size == (3 * 20 + 2 * 2, 2 * 20 + 2)
    assert canvas.getpixel((5, 5)) == (255, 0, 0) and canvas.getpixel((5, 30)) == (0, 0, 255)
    assert canvas.getpixel((50, 30)) == (255, 255, 255)  # the second row has only two images
