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



def test_progress_from_events_keeps_one_stage_per_engine_step():
    from neurflow.client.submit import progress_from_events

    got = []
    feed = progress_from_events(lambda stage, done, total: got.append((stage, done, total)))
    feed({"state": "queued"})
    feed({"state": "running", "stage": "ig layer4.1 65/300 | class 0, 0 of 2 done", "done": 0, "total": 2})
    feed({"state": "running", "stage": "ig layer4.1 118/300 | class 0, 0 of 2 done", "done": 0, "total": 2})
    feed({"state": "succeeded", "done": 2, "total": 2})
    assert got == [("queued", 0, 1), ("ig layer4.1", 0, 2), ("ig layer4.1", 0, 2), ("succeeded", 2, 2)]
