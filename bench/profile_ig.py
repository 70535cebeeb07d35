"""Micro-profile of one IG chunk on the world model: where the engine's time goes.

    python -m bench.profile_ig LOWER UPPER PATCHES NEURONS_PER_PATCH
    python -m bench.profile_ig layer3.1 layer4.0 8 16

Times the trunk pass for the chunk, the block's forward with grad over PATCHES x 50 steps, one
backward, the engine's ``multi_target_ig`` for PATCHES x NEURONS pairs, a variant with one vmapped
backward for all neurons (``is_grads_batched``), and one captum call (the baseline's unit of work).
"""
import os
import sys
import time

import torch

torch.set_num_threads(len(os.sched_getaffinity(0)))
from captum.attr import IntegratedGradients
from neurflow.world.train import ensure_world_model
from neurflow.core.layer_access import LayerAccess, readout, channel_mean
from neurflow.core.integrated_gradients import multi_target_ig, gauss_legendre
m = ensure_world_model(progress=False).load_model()
L = ["fc","layer4.1","layer4.0","layer3.1","layer3.0","layer2.1","layer2.0"]
acc = LayerAccess(m, L)
g = torch.Generator().manual_seed(0)
lower, upper = sys.argv[1], sys.argv[2]
P, K, steps = int(sys.argv[3]), int(sys.argv[4]), 50
x = torch.randn(P, 3, 64, 64, generator=g)
blk = acc.block(lower, upper)
def tm(f, n=2):
    f(); t = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t) / n
with torch.no_grad(): z = acc.full_output(x, lower)
targets = [list(range(K))] * P
pairs = P * K
def trunk():
    with torch.no_grad(): acc.full_output(x, lower)
alphas, w = gauss_legendre(steps)
sc = (alphas.float().view(-1,1,1,1,1) * z.unsqueeze(0)).reshape(steps*P, *z.shape[1:]).detach().requires_grad_(True)
def fwd():
    with torch.enable_grad(): return readout(blk(sc))
out = fwd()
def bwd_one():
    go = torch.zeros_like(out); go[:, 0] = 1
    torch.autograd.grad(out, sc, go, retain_graph=True)
def current(): multi_target_ig(blk, z, targets, steps)
def batched():  # all slots in one vmapped backward
    with torch.enable_grad():
        up = readout(blk(sc))
        go = torch.zeros(K, *up.shape)
        for k in range(K): go[k, :, k] = 1
        (gr,) = torch.autograd.grad(up, sc, go, is_grads_batched=True)
    gr = gr.view(K, steps, P, *z.shape[1:])
    return channel_mean((z.unsqueeze(0) * (w.float().view(1,-1,1,1,1,1) * gr).sum(1)).flatten(0,1))
ig = IntegratedGradients(lambda t: readout(blk(t)))
def captum_pair():
    ig.attribute(z, baselines=torch.zeros_like(z), target=0, n_steps=steps, method="gausslegendre")
res = {"trunk (P patches)": tm(trunk), "fwd with grad (P*50)": tm(fwd), "one slot backward (P*50)": tm(bwd_one),
       "engine multi_target_ig (P x K pairs)": tm(current), "one vmapped backward for K slots (fwd incl.)": tm(batched),
       "captum, one target (P pairs)": tm(captum_pair)}
for k, v in res.items(): print(f"{lower}->{upper} P={P} K={K}: {k}: {v:.3f} s", flush=True)
print(f"  per pair: engine {res['engine multi_target_ig (P x K pairs)']/pairs*1000:.1f} ms, vmapped {res['one vmapped backward for K slots (fwd incl.)']/pairs*1000:.1f} ms, captum {res['captum, one target (P pairs)']/P*1000:.1f} ms")
