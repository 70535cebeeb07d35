"""Captions inside label_circuit: prompts per group, summary labels, and failures that keep CLIP labels."""

from __future__ import annotations

import pytest

from neurflow.client.process import free_loopback_port
from neurflow.labeler.labeling import label_circuit
from neurflow.world.circuits import world_circuit

from .fake_chat_server import FakeChatServer, reply


@pytest.fixture(scope="module")
def circuit(world_clip):
    return world_circuit(world_clip.world, 4, n_images=5, split="heldout")[0]


def _captioner(url, **kw):
    return {"backend": "openai", "model": "fake-vlm", "base_url": url, "api_key_env": None, "max_retries": 0, **kw}


def test_every_group_gets_a_caption_and_a_caption_label(world_clip, circuit):
    def answer(body):
        user = body["messages"][-1]["content"]
        if isinstance(user, str):  # the text-only summary request
            return 200, reply("striped texture")
        n_sets = sum(1 for p in user if p["type"] == "text" and p["text"].startswith("Group "))
        return 200, reply(f"Features: stripes\nCaption: Black and white stripes ({n_sets} sets).")

    with FakeChatServer(handler=answer) as server:
        labeled = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(captioner=_captioner(server.base_url)))
    upper = {g.id for g in labeled.layers[1].groups if any(e.source == g.id for e in labeled.group_edges)}
    for _, _, group in labeled.iter_groups():
        cap = group.caption
        assert cap.model == f"openai:fake-vlm@{server.base_url}" and cap.prompt_version == "1"
        if group.id in upper:  # upper groups with lower groups: the multi-level prompt with 1 + 2 sets
            assert cap.prompt_id == "circuit_caption" and "(3 sets)" in cap.text
        else:
            assert cap.prompt_id == "group_caption"
        assert [lab.source for lab in group.labels] == ["clip"] * 5 + ["caption"]
        assert group.labels[-1].text == "striped texture"
    assert labeled.labeling.captioner.model.startswith("openai:fake-vlm")
    assert labeled.labeling.caption_errors == {}


def test_a_failing_group_keeps_every_clip_label(world_clip, circuit):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        if calls["n"] == 2:
            return 400, {"error": {"message": "image too small"}}
        return 200, reply("Caption: a shape.")

    plain = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling())
    with FakeChatServer(handler=flaky) as server:
        labeled = label_circuit(circuit, world_clip.heldout_images,
                                world_clip.labeling(captioner=_captioner(server.base_url, summarize=False)))
    errors = labeled.labeling.caption_errors
    assert len(errors) == 1 and "image too small" in next(iter(errors.values()))
    for (_, _, a), (_, _, b) in zip(plain.iter_groups(), labeled.iter_groups()):
        assert [(x.text, x.score) for x in a.labels] == [(x.text, x.score) for x in b.labels]
        assert (b.caption is None) == (b.id in errors)


def test_unreachable_endpoint_keeps_clip_labels_and_says_why(world_clip, circuit):
    url = f"http://127.0.0.1:{free_loopback_port()}/v1"
    labeled = label_circuit(circuit, world_clip.heldout_images, world_clip.labeling(captioner=_captioner(url)))
    errors = labeled.labeling.caption_errors
    groups = [g for _, _, g in labeled.iter_groups()]
    assert set(errors) == {g.id for g in groups}
    first = errors[groups[0].id]
    assert "unreachable" in first and url in first
    assert all(e.startswith("not attempted") for gid, e in errors.items() if gid != groups[0].id)  # no retry storm
    assert all(g.labels and g.caption is None for g in groups)
    # no caption voted, so every confidence is the uncaptioned combination's, and the record says so
    assert "captioned groups" not in labeled.labeling.confidence_method
    assert all("caption" not in g.evidence.features for g in groups)
