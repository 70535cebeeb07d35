from neurflow.core.circuit import Exemplar
from neurflow.labeler.patches import group_patches, patch_key, random_boxes, split_holdout

from neurflow.world.circuits import world_circuit


def test_group_patches_are_exemplars_then_all_member_patches_without_repeats(world_clip):
    circuit, _ = world_circuit(world_clip.world, 0, n_images=4, split="heldout")
    layer = circuit.layers[1]
    group = layer.groups[0]
    group.members = group.members + layer.groups[1].members  # two members
    patches = group_patches(circuit, 1, group)
    keys = [patch_key(p) for p in patches]
    assert len(keys) == len(set(keys))
    assert keys[:5] == [patch_key(e) for e in group.exemplars]
    members = [layer.neurons[0].concepts[0].patches, layer.neurons[1].concepts[0].patches]
    assert set(keys) == {patch_key(p) for m in members for p in m}
    # round-robin by rank: member 1's best five come before member 0's sixth (a cap keeps both)
    first_ten = set(keys[:10])
    assert {patch_key(p) for p in members[1][:5]} <= first_ten and patch_key(members[0][5]) not in first_ten


def test_holdout_is_deterministic_and_spares_kept_patches():
    patches = [Exemplar(image=i, box=[0, 0, 4, 4], activation=1.0) for i in range(20)]
    keep = {patch_key(p) for p in patches[:5]}
    used, held = split_holdout(patches, 0.25, seed=3, keep=keep)
    assert len(held) == 5 and len(used) == 15 and not keep & {patch_key(p) for p in held}
    assert split_holdout(patches, 0.25, seed=3, keep=keep) == (used, held)
    few_used, few_held = split_holdout(patches[:4], 0.5, seed=3)
    assert len(few_used) >= 3 and len(few_used) + len(few_held) == 4
    assert split_holdout(patches, 0.0, seed=3) == (patches, [])


def test_random_boxes_lie_in_the_centre_square_at_the_granularities(world_clip):
    circuit, _ = world_circuit(world_clip.world, 0, n_images=4, split="heldout")
    boxes = random_boxes(circuit, 300, seed=0)
    assert len(boxes) == 300
    sides = set()
    for ex in boxes:
        ref = circuit.images[ex.image]
        square = min(ref.width, ref.height)
        ox = (ref.width - square) // 2
        x0, y0, x1, y1 = ex.box
        assert x1 - x0 == y1 - y0 and ox <= x0 and x1 <= ox + square and 0 <= y0 and y1 <= ref.height
        sides.add((x1 - x0) / square)
    assert {round(s, 2) for s in sides} == {1.0, 0.5, 0.25}
