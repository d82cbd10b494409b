from gateway.dataplane.proxy import request_head, response_fields


def lines(head: bytes) -> list[bytes]:
    return head.split(b"\r\n")


def test_hop_by_hop_and_connection_named_headers_are_stripped() -> None:
    h = ((b"Host", b"x"), (b"Connection", b"keep-alive, X-Secret"), (b"X-Secret", b"s"),
         (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
         (b"Accept", b"*/*"), (b"Content-Length", b"3"))
    head = request_head(b"POST", b"/predict", h, b"10.0.0.1", b"http", 3, b"svc")
    assert lines(head) == [b"POST /predict HTTP/1.1", b"Host: x", b"Accept: */*",
                           b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-Proto: http",
                           b"X-Forwarded-Host: x", b'Forwarded: for=10.0.0.1;host="x";proto=http',
                           b"Content-Length: 3", b"", b""]


FORGED = ((b"Host", b"api.example"), (b"X-Forwarded-For", b"1.1.1.1"),
          (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil.example"),
          (b"Forwarded", b"for=6.6.6.6;proto=https"), (b"X-Forwarded-For", b"3.3.3.3, 4.4.4.4"),
          (b"X-Shadow", b"1"), (b"x-shadow", b"0"))


def test_untrusted_client_cannot_forge_what_the_gateway_owns() -> None:
    head = request_head(b"GET", b"/a?b=1", FORGED, b"2.2.2.2", b"http", 0, b"svc")
    got = lines(head)
    # every X-Forwarded-For value is kept, in order, then the peer
    assert got.count(b"X-Forwarded-For: 1.1.1.1, 3.3.3.3, 4.4.4.4, 2.2.2.2") == 1
    assert [x for x in got if x.lower().startswith(b"x-forwarded-for")] == \
        [b"X-Forwarded-For: 1.1.1.1, 3.3.3.3, 4.4.4.4, 2.2.2.2"]
    assert b"X-Forwarded-Proto: http" in got and b"X-Forwarded-Proto: https" not in got
    assert b"X-Forwarded-Host: api.example" in got and b"evil.example" not in head
    assert [x for x in got if x.startswith(b"Forwarded")] == \
        [b'Forwarded: for=2.2.2.2;host="api.example";proto=http']
    assert b"shadow" not in head.lower()
    assert b"Content-Length" not in head           # GET without body


def test_trusted_proxy_keeps_its_forwarding_headers() -> None:
    head = request_head(b"GET", b"/", FORGED, b"2.2.2.2", b"http", 0, b"svc", trusted=True)
    got = lines(head)
    assert b"X-Forwarded-Proto: https" in got and b"X-Forwarded-Proto: http" not in got
    assert b"X-Forwarded-Host: evil.example" in got and b"X-Forwarded-Host: api.example" not in got
    assert b'Forwarded: for=6.6.6.6;proto=https, for=2.2.2.2;host="api.example";proto=http' in got
    assert b"X-Forwarded-For: 1.1.1.1, 3.3.3.3, 4.4.4.4, 2.2.2.2" in got
    assert b"shadow" not in head.lower()           # X-Shadow is the gateway's, trusted or not


def test_host_filled_in_and_ipv6_peer_quoted() -> None:
    head = request_head(b"GET", b"/", (), b"::1", b"http", 0, b"svc")
    assert b"Host: svc\r\n" in head                # HTTP/1.0 client: a Host is filled in
    assert b'Forwarded: for="[::1]";host="svc";proto=http\r\n' in head


def test_streamed_body_is_chunked() -> None:
    head = request_head(b"POST", b"/", ((b"Transfer-Encoding", b"chunked"),), b"p", b"http", None, b"s")
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n") and head.count(b"chunked") == 1


def test_response_hop_by_hop_stripped() -> None:
    out = response_fields([(b"Content-Type", b"application/json"), (b"Connection", b"close, X-A"),
                            (b"X-A", b"1"), (b"Transfer-Encoding", b"chunked"),
                            (b"Content-Length", b"9"), (b"X-Keep", b"y")])
    assert out == b"Content-Type: application/json\r\nX-Keep: y\r\n"
