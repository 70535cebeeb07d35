"""neurflow.progress: the one progress event, the meter that makes it (throttle, clock, ETA) and what a
log (not a terminal) shows of it."""

from __future__ import annotations

import io
import math

import msgspec
import pytest

from neurflow.progress import Meter, ProgressBars, ProgressEvent, decode_event, encode_event, in_class


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_event_round_trips_as_json_and_refuses_an_unknown_schema():
    event = ProgressEvent(stage="ig layer4", done=3, total=12, unit="neuron-patch pairs", elapsed=1.5, eta=4.5,
                          target=7, classes_done=2, classes_total=10)
    assert decode_event(encode_event(event)) == event
    assert msgspec.convert(msgspec.to_builtins(event), ProgressEvent) == event  # as SSE's JSON carries it
    with pytest.raises(msgspec.ValidationError, match="neurflow.progress/9"):
        decode_event(b'{"stage": "x", "done": 0, "total": 1, "schema": "neurflow.progress/9"}')


def test_a_row_from_before_events_still_reads_with_its_text_as_it_was():
    old = ProgressEvent.legacy("activations 40/96 | class 7, 3 of 10 done", 3, 10)
    assert (old.stage, old.done, old.total, old.unit, old.eta) == ("activations 40/96 | class 7, 3 of 10 done", 3, 10,
                                                                    "", None)
    assert old.fraction() == pytest.approx(0.3)


def test_the_job_fraction_counts_finished_classes_and_the_stage_within_the_current_one():
    event = ProgressEvent(stage="ig fc", done=1, total=4).in_class(target=5, classes_done=2, classes_total=4)
    assert event.fraction() == pytest.approx((2 + 0.25) / 4)
    assert ProgressEvent(stage="ig fc", done=1, total=4).fraction() == pytest.approx(0.25)


def test_counters_move_within_a_stage_and_the_eta_is_finite_and_decreasing_at_a_steady_rate():
    clock, seen = FakeClock(), []
    meter = Meter(seen.append, every_s=0.0, clock=clock)
    clock.now += 2.0  # the stage starts at the meter's creation: the first report already has a rate
    for done in range(1, 11):
        meter("activations", done, 10, "patches")
        clock.now += 2.0  # two seconds per unit
    assert [e.done for e in seen] == list(range(1, 11)) and all(e.unit == "patches" for e in seen)
    etas = [e.eta for e in seen]
    assert all(eta is not None and math.isfinite(eta) for eta in etas)
    assert all(a > b for a, b in zip(etas, etas[1:])) and etas[-1] == 0.0
    assert etas[0] == pytest.approx(2.0 * 9)  # 2 s for the first unit, 9 to go
    assert seen[4].elapsed == pytest.approx(10.0) and seen[4].eta == pytest.approx(10.0)


def test_the_one_throttle_keeps_stage_changes_and_last_steps():
    clock, seen = FakeClock(), []
    meter = Meter(seen.append, every_s=0.2, clock=clock)
    for done in range(100):
        meter("ig fc", done, 100)
        clock.now += 0.01  # 100 steps in one second: about 5 reports, not 100
    meter("ig fc", 100, 100)
    meter("groups", 0, 2)
    clock.now += 0.01
    meter("groups", 1, 2)  # within 0.2 s of the stage's first report: dropped
    meter("groups", 2, 2)  # the last step always goes
    ig = [e.done for e in seen if e.stage == "ig fc"]
    assert ig[0] == 0 and ig[-1] == 100 and 5 <= len(ig) <= 8
    assert [e.done for e in seen if e.stage == "groups"] == [0, 2]
    assert seen[-1].elapsed == pytest.approx(0.01)  # a stage's clock starts at the previous stage's last step


def test_a_meter_without_a_sink_reports_nothing_and_in_class_marks_the_class():
    Meter(None)("x", 0, 1)  # no error
    seen = []
    report = Meter(in_class(seen.append, target=3, classes_done=1, classes_total=4), every_s=0.0)
    report("labeling: clip", 2, 5, "groups")
    assert (seen[0].target, seen[0].classes_done, seen[0].classes_total, seen[0].done) == (3, 1, 4, 2)


def test_a_log_gets_a_line_per_stage_start_and_end_not_per_step():
    out = io.StringIO()
    bars = ProgressBars(stream=out)  # StringIO is not a terminal
    report = Meter(bars, every_s=0.0)
    for step in range(500):
        report("fit", step, 500, "patches")
    report("label", 0, 2, "groups")  # a new stage ends the previous one
    report("label", 2, 2, "groups")
    bars.close()
    bars.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["fit", "fit", "label", "label"]
    assert lines[0] == "fit: started (500 patches to do)" and lines[1].startswith("fit: 499/500 patches, ")
    assert lines[1].endswith(" s left")  # the last event of an unfinished stage still has its ETA
    assert lines[3].startswith("label: 2/2 groups, ") and "\r" not in out.getvalue()


def test_a_long_stage_logs_its_progress_at_intervals_with_its_class():
    out = io.StringIO()
    with ProgressBars(stream=out, log_interval=0.0) as bars:
        bars(ProgressEvent(stage="train", done=0, total=3))
        bars(ProgressEvent(stage="train", done=2, total=3, elapsed=4.0, eta=2.0, target=1, classes_done=0,
                           classes_total=2))
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: started (3 to do)"
    assert "train: 2/3, 4 s, about 2 s left (class 1, 0 of 2 done)" in lines
