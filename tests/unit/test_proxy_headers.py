from gateway.dataplane.proxy import request_head, response_headers


def lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")


def test_hop_by_hop_and_connection_named_headers_are_stripped() -> None:
    h = ((b"Host", b"x"), (b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"s"),
         (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
         (b"Accept", b"*/*"), (b"Content-Length", b"3"))
    head = request_head(b"POST", b"/predict", h, b"10.0.0.1", b"http", 3, b"svc")
    assert lines(head) == [b"POST /predict HTTP/1.1", b"Host: x", b"Accept: */*",
                           b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-Proto: http",
                           b"Content-Length: 3", b"", b""]


def test_forwarded_for_is_appended_and_proto_kept() -> None:
    h = ((b"X-Forwarded-For", b"1.1.1.1"), (b"X-Forwarded-Proto", b"https"))
    head = request_head(b"GET", b"/a?b=1", h, b"2.2.2.2", b"http", 0, b"svc")
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n" in head
    assert b"X-Forwarded-Proto: https\r\n" in head and b"X-Forwarded-Proto: http\r\n" not in head
    assert b"Host: svc\r\n" in head                # HTTP/1.0 client: a Host is filled in
    assert b"Content-Length" not in head           # GET without body


def test_streamed_body_is_chunked() -> None:
    head = request_head(b"POST", b"/", ((b"Transfer-Encoding", b"chunked"),), b"p", b"http", None, b"s")
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n") and head.count(b"chunked") == 1


def test_response_hop_by_hop_stripped() -> None:
    out = response_headers([(b"Content-Type", b"application/json"), (b"Connection", b"close, X-A"),
                            (b"X-A", b"1"), (b"Transfer-Encoding", b"chunked"),
                            (b"Content-Length", b"9"), (b"X-Keep", b"y")])
    assert out == [("Content-Type", "application/json"), ("X-Keep", "y")]
