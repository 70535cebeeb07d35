"""neurflow.progress: what a log (not a terminal) shows of long work."""

from __future__ import annotations

import io

from neurflow.progress import ProgressBars


def test_a_log_gets_a_line_per_stage_start_and_end_not_per_step():
    out = io.StringIO()
    bars = ProgressBars(stream=out)  # StringIO is not a terminal
    for step in range(500):
        bars("fit", step, 500)
    bars("label", 0, 2)  # a new stage ends the previous one
    bars("label", 2, 2)
    bars.close()
    bars.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["fit", "fit", "label", "label"]
    assert lines[0] == "fit: started (500 to do)" and lines[1].startswith("fit: 499/500 in ")
    assert lines[3].startswith("label: 2/2 in ") and "\r" not in out.getvalue()


def test_a_long_stage_logs_its_progress_at_intervals():
    out = io.StringIO()
    with ProgressBars(stream=out, log_interval=0.0) as bars:
        bars("train", 0, 3)
        bars("train", 2, 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: started (3 to do)" and any(line.startswith("train: 2/3 after") for line in lines)
    assert lines[-1].startswith("train: 2/3 in ")
