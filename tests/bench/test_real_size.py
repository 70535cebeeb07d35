"""The real-size section's own logic (the runs themselves take an hour): which runs it asks for, the
10-minute verdict, and how the five-layer fast sets are compared with a two-layer exact run."""

from __future__ import annotations

import argparse

from bench import engine_speed, real_size

LAYERS2 = ["fc", "layer4.2", "layer4.1"]


def _run(wall: float, process: float, core: dict, bottom: list[int]) -> dict:
    return {"wall_s": wall, "child_wall_s": process, "core": core, "bottom_chosen": bottom}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    real_size.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args.fast_alt = None
    return args


def test_target_verdict_needs_fit_and_process_within_ten_minutes():
    assert real_size.target_verdict(_run(566.6, 580.9, {}, [])).endswith("PASS")
    assert real_size.target_verdict(_run(590.0, 612.0, {}, [])).endswith("FAIL")
    assert real_size.target_verdict(_run(601.0, 601.0, {}, [])).endswith("FAIL")


def test_five_layer_fast_run_is_compared_with_the_exact_layers(monkeypatch, capsys):
    exact = _run(900, 910, {"fc": [3], "layer4.2": [1, 2, 5, 7]}, [10, 11, 12, 13])
    two_fast = _run(90, 100, {"fc": [3], "layer4.2": [1, 2, 5, 7]}, [10, 11, 12, 13])
    # the five-layer run's layer4.1 core set plays the two-layer run's kept channels
    five_fast = _run(550, 570, {"fc": [3], "layer4.2": [1, 2, 5, 8], "layer4.1": [10, 11, 12, 99],
                                "layer4.0": [4], "layer3.5": [6]}, [20])
    calls = []

    def fake_section(sub):
        calls.append((sub.fitted_layers, sub.runs))
        if sub.fitted_layers == 5:
            return {"config": {"layers": real_size.REAL_LAYERS}, "runs": {"fast": five_fast}}
        return {"config": {"layers": LAYERS2}, "runs": {"exact": exact, "fast": two_fast}}

    monkeypatch.setattr(engine_speed, "run_section", fake_section)
    results = real_size.run_section(_args("--real-runs", "exact,fast"))
    assert calls == [(2, "exact,fast"), (5, "fast")]
    cmp = results["five_layers_fast_vs_exact"]
    assert cmp["per_layer"]["layer4.2"] == 3 / 5
    assert cmp["bottom_edges"] == 3 / 5
    assert "fit 550.0 s, whole process 570.0 s (target <= 600 s per class) -> PASS" in capsys.readouterr().out

    calls.clear()
    real_size.run_section(_args("--real-runs", "exact,fast", "--no-real-five"))
    assert calls == [(2, "exact,fast")]
