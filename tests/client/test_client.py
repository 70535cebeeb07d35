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
    assert [e.stage for e in got] == ["queued", "ig layer4.1", "ig layer4.1", "labeling 3/9", "succeeded"]
    assert (got[3].done, got[3].total) == (3, 9)
    out = io.StringIO()
    with ProgressBars(stream=out, log_interval=0.0) as bars:
        for event in got[1:3]:
            bars(event)
    assert "ig layer4.1: 118/300 neuron-patch pairs, 24 s, about 37 s left (class 0, 0 of 2 done)" in out.getvalue()
