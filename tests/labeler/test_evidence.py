"""Evidence from several CLIPs and the fitted combination, on constructed embeddings with known answers."""

import json

import numpy as np
import pytest

from neurflow.labeler.evidence import (CLIP_FEATURES, COMBINATION_FILE, FEATURES, UNCERTAIN_BELOW, ClipView,
                                       Combination, caption_vote, combined_scores, default_combination, features,
                                       is_uncertain_probability, judge, weighted_mixture)
from neurflow.labeler.scoring import mosaic_scores


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _view(exemplar_rows, patch_rows=None, weights=None, name="clip:a", prompts=None):
    exemplars = _unit(np.array(exemplar_rows, dtype=float))
    patches = exemplars if patch_rows is None else np.concatenate([exemplars, _unit(np.array(patch_rows, dtype=float))])
    return ClipView(name, np.eye(4), 20.0, exemplars, patches, weights, prompts)


def test_one_clip_is_the_single_clip_mosaic_score():
    rng = np.random.default_rng(0)
    view = _view(np.eye(4)[[0, 0, 1, 0, 2]] + 0.1 * rng.random((5, 4)), np.eye(4)[[1] * 8] + 0.1 * rng.random((8, 4)))
    single = mosaic_scores(view.exemplars, view.patches, np.full(4, 0.25), view.concepts, 20.0, contrast=0.0)
    assert np.allclose(combined_scores([view]), single)


def test_several_clips_are_read_as_one_so_a_hesitant_misreading_weighs_less_than_a_clean_reading():
    # CLIP a reads every exemplar as concept 1, barely (cosine 0.95 against 0.90 for concept 0: a part
    # it was taught under a wrong name); CLIP b reads three as concept 0 and two as concept 2, cleanly.
    hesitant = _view([[0.90, 0.95, 0, 0]] * 5, name="clip:a")
    clean = _view([[1, 0, 0, 0]] * 3 + [[0, 0, 1, 0]] * 2, name="clip:b")
    # pooled as the mean of the two CLIPs' vote mixtures, a's five votes for 1 would beat b's three for 0
    mean_of_votes = np.mean([combined_scores([hesitant]), combined_scores([clean])], axis=0)
    assert mean_of_votes.argmax() == 1
    # read as one CLIP (each crop's logits summed), three crops are concept 0 and two concept 2
    assert combined_scores([hesitant, clean]).argmax() == 0
    assert combined_scores([hesitant, clean]).argmax() == combined_scores([clean, hesitant]).argmax()
    with pytest.raises(ValueError, match="same exemplars"):
        combined_scores([hesitant, _view([[1, 0, 0, 0]] * 4)])


def test_a_second_clip_outvotes_the_first_where_it_is_surer_and_the_disagreement_is_recorded():
    wrong = _view([[0.2, 1, 0, 0]] * 3 + [[1, 0.2, 0, 0]] * 2, name="clip:vit")  # reads part 0 as part 1, 3 of 5
    right = _view([[1, 0, 0, 0]] * 5, name="clip:rn")
    assert combined_scores([wrong]).argmax() == 1 and combined_scores([wrong, right]).argmax() == 0
    both = features([wrong, right], top=0)
    assert both["clips"] == 0.5 and features([right, right], top=0)["clips"] == 1.0
    assert both["exemplars"] == (7 + 1) / (10 + 2)  # every CLIP's exemplar votes are pooled
    verdict = judge([wrong, right], ["a", "b", "c", "d"], Combination((0.0,) * (len(CLIP_FEATURES) + 1)))
    assert [v["voter"] for v in verdict.votes] == ["clip:vit mosaic", "clip:vit patches", "clip:rn mosaic", "clip:rn patches"]
    assert [v["text"] for v in verdict.votes[::2]] == ["b", "a"]


def test_patches_vote_with_their_activation_weight():
    view = _view([[1, 0, 0, 0]], [[0, 1, 0, 0]] * 3 + [[0, 0, 1, 0]] * 2, weights=np.array([1, 0.1, 0.1, 0.1, 1, 1]))
    assert weighted_mixture(view).argmax() == 2  # two strong patches outweigh three weak ones
    unweighted = ClipView(view.voter, view.concepts, 20.0, view.exemplars, view.patches)
    assert weighted_mixture(unweighted).argmax() == 1
    assert features([view], top=2)["patches"] > features([unweighted], top=2)["patches"]


def test_prompts_feature_is_the_share_of_single_prompts_that_agree():
    concepts = np.eye(4)
    agree, disagree = concepts, concepts[[1, 0, 2, 3]]  # the second prompt swaps concepts 0 and 1
    view = _view([[1, 0, 0, 0]] * 5, prompts=np.stack([agree, agree, disagree]))
    assert features([view], top=0)["prompts"] == pytest.approx(2 / 3)
    assert features([_view([[1, 0, 0, 0]] * 5)], top=0)["prompts"] == 1.0  # one prompt: nothing to disagree


def test_combination_is_a_probability_and_uncertain_below_one_half():
    six = ("exemplars", "patches", "margin", "clips", "prompts", "split")  # a combination names the features it uses
    combination = Combination((-3.0, 2.0, 1.0, 2.0, 1.0, 1.0, -2.0), six)
    low = {"exemplars": 0.3, "patches": 0.3, "margin": 0.1, "clips": 0.5, "prompts": 0.5, "split": 1.0}
    high = {"exemplars": 0.9, "patches": 0.9, "margin": 0.8, "clips": 1.0, "prompts": 1.0, "split": 0.0}
    assert 0.0 < combination.probability(low) < UNCERTAIN_BELOW < combination.probability(high) < 1.0
    mixed = judge([_view([[1, 0, 0, 0]] * 3 + [[0, 1, 0, 0]] * 2)], "abcd", combination)
    pure = judge([_view([[1, 0, 0, 0]] * 5)], "abcd", combination)
    assert mixed.order[0] == pure.order[0] == 0 and mixed.confidence < pure.confidence
    assert mixed.features["split"] == pytest.approx(2 / 3, abs=1e-5) and pure.features["split"] == 0.0
    with pytest.raises(ValueError, match="needs 7 coefficients"):
        Combination((1.0, 2.0), six)
    assert is_uncertain_probability(0.49) and not is_uncertain_probability(0.5) and not is_uncertain_probability(None)


def test_a_consistently_misnaming_clip_shows_in_cosine_top_and_entropy():
    # A clean CLIP puts a part's crops on its name; a CLIP taught a wrong name for a part puts them
    # between the two names: the label is the same, the evidence for it is weaker.
    clean = _view([[0, 1, 0, 0]] * 5)
    misnamed = _view([[0.8, 1, 0, 0]] * 5)
    a, b = features([clean], top=1), features([misnamed], top=1)
    assert judge([misnamed], "abcd").order[0] == 1
    assert b["cosine"] < a["cosine"] == pytest.approx(1.0)
    assert b["top"] < a["top"] and b["entropy"] > a["entropy"]
    assert a["single"] == 1.0 and features([clean, misnamed], top=1)["single"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in (*a.values(), *b.values()))


def test_shipped_combination_was_fitted_on_dev_worlds_only(tmp_path):
    from neurflow.world.suite import SUITE

    shipped = default_combination()
    assert shipped.features == CLIP_FEATURES and len(shipped.coefficients) == len(CLIP_FEATURES) + 1
    worlds = shipped.fitted_on["worlds"]
    assert worlds and all(SUITE[w].role == "dev" for w in worlds)
    assert shipped.fitted_on["labels"] > shipped.fitted_on["wrong"] > 0
    assert Combination.from_file(COMBINATION_FILE) == shipped
    broken = tmp_path / "c.json"
    broken.write_text(json.dumps({"features": ["exemplars"]}))
    with pytest.raises(ValueError, match="cannot read the label combination .*'coefficients'"):
        Combination.from_file(broken)


def test_rerank_takes_the_candidate_the_combination_finds_likeliest_right():
    # Three exemplars a CLIP barely reads as part 0 (nearly part 1) and two clean part-1 exemplars: the
    # hard votes put part 0 first; a combination that trusts the label's cosine prefers part 1.
    view = _view([[1, 0.95, 0, 0]] * 3 + [[0, 1, 0, 0]] * 2)
    trusts_cosine = Combination((-2.0,) + tuple(6.0 if f == "cosine" else 0.0 for f in CLIP_FEATURES))
    first = judge([view], "abcd", trusts_cosine, candidates=1)
    chosen = judge([view], "abcd", trusts_cosine, candidates=2)
    assert first.order[0] == 0 and chosen.order[0] == 1
    assert sorted(chosen.order) == list(range(4)) and chosen.confidence > first.confidence
    assert chosen.features["cosine"] > first.features["cosine"]


def test_a_caption_vote_reads_the_caption_with_every_clip_text_tower_summed_as_crops_are():
    views = [_view([[1, 0, 0, 0]] * 5, name="clip:a"), _view([[1, 0, 0, 0]] * 5, name="clip:b")]
    # tower a places the caption between concepts 1 and 2, tower b nearer concept 2
    a, b = _unit([0, 1, 0.9, 0]), _unit([0, 0.5, 1, 0])
    vote = caption_vote("caption:m", "a kite", [a, b], views)
    logits = 20.0 * (np.eye(4) @ a) + 20.0 * (np.eye(4) @ b)
    assert np.allclose(vote.distribution, np.exp(logits) / np.exp(logits).sum())
    assert vote.first == 2 and vote.text == "a kite"
    assert caption_vote("caption:m", "a kite", [a], views[:1]).first == 1
    # a captioner 60 % sure of its answer gives the rest of its vote to every concept evenly
    hesitant = caption_vote("caption:m", "a kite", [a, b], views, confidence=0.6)
    assert np.allclose(hesitant.distribution, 0.6 * vote.distribution + 0.4 / 4) and hesitant.first == 2
    with pytest.raises(ValueError, match="probability in"):
        caption_vote("caption:m", "a kite", [a, b], views, confidence=1.5)
    with pytest.raises(ValueError, match="one text embedding per CLIP view"):
        caption_vote("caption:m", "a kite", [a], views)


def test_a_caption_is_one_more_vote_the_combination_weighs_against_the_clips():
    # one CLIP reads every exemplar as part 1, between parts 0 and 1 (a part it was taught a wrong name
    # for); a caption names part 0
    view = _view([[0.8, 1, 0, 0]] * 5)
    vote = caption_vote("caption:m", "part a", [_unit([1, 0, 0, 0])], [view])
    assert "caption" not in features([view], top=1) and features([view], top=0, caption=vote)["caption"] > 0.9
    trusts_caption = Combination((-1.0,) + tuple(4.0 if f == "caption" else 0.0 for f in FEATURES), FEATURES)
    trusts_clip = Combination((-1.0,) + tuple(4.0 if f == "top" else 0.0 for f in FEATURES), FEATURES)
    assert judge([view], "abcd", trusts_caption, caption=vote).order[0] == 0
    kept = judge([view], "abcd", trusts_clip, caption=vote)
    assert kept.order[0] == 1 and kept.features["caption"] < 0.1
    # the caption's words are recorded as a vote beside the CLIP's, and without a caption nothing changes
    assert [(v["voter"], v["text"]) for v in kept.votes][-1] == ("caption:m words", "a")
    assert judge([view], "abcd").order[0] == 1 and len(judge([view], "abcd").votes) == 2
    with pytest.raises(ValueError, match=r"reads \['caption'\]"):  # it cannot judge a group without a caption
        trusts_caption.probability(features([view], top=1))


def test_shipped_captioned_combination_reads_the_caption_and_was_fitted_on_dev_worlds_only():
    from neurflow.labeler.evidence import CAPTIONED_COMBINATION_FILE, captioned_combination, combination_for
    from neurflow.world.suite import SUITE

    captioned = captioned_combination()
    assert captioned.features == FEATURES and Combination.from_file(CAPTIONED_COMBINATION_FILE) == captioned
    assert captioned.coefficients[1 + FEATURES.index("caption")] > 0  # a caption for the label never lowers it
    assert all(SUITE[w].role == "dev" for w in captioned.fitted_on["worlds"]) and captioned.fitted_on["wrong"] > 0
    assert captioned.fitted_on["recalibrated"]["scale"] > 0  # Platt scaling keeps every choice
    view = _view([[1, 0, 0, 0]] * 5)
    assert combination_for(None) == default_combination()
    assert combination_for(caption_vote("caption:m", "a", [_unit([1, 0, 0, 0])], [view])) == captioned
