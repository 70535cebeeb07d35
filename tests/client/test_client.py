"""The HTTP client without a server: the SSE stream's parsing, progress from job events."""

from __future__ import annotations


def test_client_sse_parsing_skips_keepalives():
    import httpx

    from neurflow.client.api import Client

    stream = (b": keep-alive\r\ndata: \r\n\r\n"
              b'id: 1\r\nevent: progress\r\ndata: {"state": "running", "done": 1}\r\n\r\n'
              b": keep-alive\r\ndata: \r\n\r\n"
              b'id: 2\r\nevent: end\r\ndata: {"state": "succeeded"}\r\n\r\n')
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=stream,
                                                                   headers={"content-type": "text/event-stream"}))
    client = Client("http://test")
    client.http = httpx.Client(base_url="http://test", transport=transport)
    assert list(client.events("job-x")) == [("progress", {"state": "running", "done": 1}),
                                            ("end", {"state": "succeeded"})]



def test_progress_from_events_hands_on_the_workers_events_and_the_bars_print_them():
    import io

    import msgspec

    from neurflow.client.submit import progress_from_events
    from neurflow.progress import ProgressBars, ProgressEvent

    got = []
    feed = progress_from_events(got.append)
    first = ProgressEvent(stage="ig layer4.1", done=65, total=300, unit="neuron-patch pairs", elapsed=13.0, eta=47.0,
                          target=0, classes_done=0, classes_total=2)
    later = msgspec.structs.replace(first, done=118, elapsed=24.0, eta=37.0)
    feed({"state": "queued", "stage": "", "done": 0, "total": 0})
    feed({"state": "running", "stage": "ig layer4.1", "done": 65, "total": 300, "progress_event": msgspec.to_builtins(first)})
    feed({"state": "running", "stage": "ig layer4.1", "done": 118, "total": 300, "progress_event": msgspec.to_builtins(later)})
    feed({"state": "running", "stage": "labeling 3/9", "done": 3, "total": 9})  # a server from before events
    feed({"state": "succeeded", "stage": "done", "done": 2, "total": 2})
    assert got[1:3] == [first, later]  # the events as the worker made them, not re-parsed text
    assert [e.stage for e in got] == ["queued", "ig layer4.1", "ig layer4.1", "labeling 3/9", "ig layer4.1",
                                      "labeling 3/9", "succeeded"]
    # the job's success shows that every stage it ran finished
    assert [(e.done, e.total) for e in got[3:]] == [(3, 9), (300, 300), (9, 9), (0, 0)]
    out = io.StringIO()
    with ProgressBars(stream=out, log_interval=0.0) as bars:
        for event in got[1:3]:
            bars(event)
    assert "ig layer4.1: 118/300 neuron-patch pairs, 24 s, about 37 s left (class 0, 0 of 2 done)" in out.getvalue()


def test_a_stage_that_ended_between_two_samples_is_shown_finished_only_when_something_proves_it():
    import io

    import msgspec

    from neurflow.client.submit import progress_from_events
    from neurflow.progress import ProgressBars, ProgressEvent

    def running(stage, done, total, target=None):
        event = ProgressEvent(stage=stage, done=done, total=total, unit="units", elapsed=1.0, target=target)
        return {"state": "running", "stage": stage, "done": done, "total": total,
                "progress_event": msgspec.to_builtins(event)}

    got = []
    feed = progress_from_events(got.append)
    feed({"state": "running", "stage": "starting", "done": 0, "total": 0})
    feed(running("loading model", 0, 1))  # the last sample of it the client saw
    feed(running("activations", 40, 96))  # the next stage: loading the model has finished
    feed({"state": "succeeded", "stage": "", "done": 0, "total": 0})  # so has every stage
    assert [(e.stage, e.done, e.total) for e in got] == [
        ("starting", 0, 0), ("loading model", 0, 1), ("loading model", 1, 1), ("activations", 40, 96),
        ("activations", 96, 96), ("succeeded", 0, 0)]

    side_by_side = []  # Ray runs classes side by side: another class's stage proves nothing
    feed = progress_from_events(side_by_side.append)
    feed(running("ig fc", 3, 20, target=0))
    feed(running("activations", 10, 96, target=1))
    feed(running("ig layer4", 5, 50, target=0))  # class 0's next stage: its ig fc finished
    feed({"state": "failed", "stage": "", "done": 0, "total": 0})  # a failure finishes nothing
    assert [(e.stage, e.target, e.done) for e in side_by_side] == [
        ("ig fc", 0, 3), ("activations", 1, 10), ("ig fc", 0, 20), ("ig layer4", 0, 5), ("failed", None, 0)]

    out = io.StringIO()
    with ProgressBars(stream=out) as bars:
        for event in got:
            bars(event)
    assert out.getvalue().splitlines() == [
        "starting", "loading model: started (1 units to do)", "loading model: 1/1 units, 1 s",
        "activations: started (96 units to do)", "activations: 96/96 units, 1 s", "succeeded"]
