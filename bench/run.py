"""``make bench`` = ``python -m bench.run``: run the bench sections one after another.

Sections (``python -m bench.run SECTION [options]``; no section = all of them, in order):

* ``engine``: engine speed and peak memory against the reference-structured baseline
  (:mod:`bench.engine_speed`).
* ``realsize``: the same comparison on ResNet-50 at 224 px, 50 images (:mod:`bench.real_size`).
* ``suggested``: ResNet-50 at 224 px, 50 images, tau 16, fast, on the layers ``"layers": "auto"``
  suggests: whole-process wall and CPU seconds per class against the 10-minute target
  (:mod:`bench.suggested`).
* ``api``: requests per second and p50/p99 latency of the REST API's read endpoints under 32
  concurrent clients (:mod:`bench.api_load`).
* ``labels``: label quality on the world suite, dev and held-out worlds, per CLIP quality: top-1,
  top-1 of the confident labels and their coverage, ROC-AUC and ECE of the confidence, the
  five-exemplar baseline in every row (:mod:`bench.labels`).
* ``fidelity``: the fast preset's core-neuron sets against exact on several worlds, models and sizes
  (:mod:`bench.fidelity`).
* ``corrections``: top-1 of the groups not corrected, before and after a simulated annotator corrects
  the 5 % and 10 % least-confident groups and the corrections re-score the rest (:mod:`bench.corrections`).
* ``captions``: the caption's words as one more vote: each world's own clean and noisy captioners,
  top-1, confident top-1 and coverage, ROC-AUC and ECE with and without the caption vote, beside the
  baseline (:mod:`bench.caption_votes`).
* ``audit``: the shortcut audit on planted worlds, dev and held-out: planted cue among the top 3
  findings of its class, findings per class on clean networks, audit time (:mod:`bench.audit`).

A new section is a module with ``add_arguments(parser)`` and ``run_section(args) -> dict``,
registered in ``SECTIONS`` below; options are shared, so each section ignores the ones it does not use.
"""

from __future__ import annotations

import argparse
import importlib
import time

#: section name -> module (imported lazily, so one section's imports never slow another one down).
SECTIONS: dict[str, str] = {
    "engine": "bench.engine_speed",
    "realsize": "bench.real_size",
    "suggested": "bench.suggested",
    "api": "bench.api_load",
    "labels": "bench.labels",
    "fidelity": "bench.fidelity",
    "corrections": "bench.corrections",
    "captions": "bench.caption_votes",
    "audit": "bench.audit",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", help=f"sections to run (default: all of {', '.join(SECTIONS)})")
    modules = {name: importlib.import_module(path) for name, path in SECTIONS.items()}
    seen: set[str] = set()
    for module in modules.values():
        group = argparse.ArgumentParser(add_help=False)
        module.add_arguments(group)
        for action in group._actions:  # shared options: add each flag once
            if any(opt in seen for opt in action.option_strings):
                continue
            seen.update(action.option_strings)
            parser._add_action(action)
    args = parser.parse_args(argv)
    wanted = args.sections or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    for name in wanted:
        started = time.perf_counter()
        print(f"== bench section {name}", flush=True)
        modules[name].run_section(args)
        print(f"== section {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
