use super::*;

type Fields<'a> = &'a [(&'a str, &'a str)];

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn head(method: Method, path: &str, pairs: &[(&str, &str)], body: BodyShape) -> (String, Framing) {
    let mut out = BytesMut::new();
    let h = headers(pairs);
    let head = RequestHead {
        method: &method,
        path,
        headers: &h,
        set: &[],
        rendered: &[],
    };
    let framing = write_request_head(&mut out, &head, body);
    (String::from_utf8(out.to_vec()).unwrap(), framing)
}

#[test]
fn request_heads_are_framed_as_hyper_frames_them() {
    use BodyShape::*;
    let host = ("host", "svc");
    let cases: &[(Method, Fields, BodyShape, &str, Framing)] = &[
        // No body: nothing added; a Transfer-Encoding is dropped.
        (Method::GET, &[host], Empty, "host: svc\r\n", Framing::None),
        (
            Method::POST,
            &[host, ("transfer-encoding", "chunked")],
            Empty,
            "host: svc\r\n",
            Framing::None,
        ),
        // A known length is declared.
        (
            Method::POST,
            &[host],
            Exact(5),
            "host: svc\r\ncontent-length: 5\r\n",
            Framing::Length(5),
        ),
        // The client's valid Content-Length stands.
        (
            Method::PUT,
            &[host, ("content-length", "7")],
            Unknown,
            "host: svc\r\ncontent-length: 7\r\n",
            Framing::Length(7),
        ),
        // Unknown length: chunked, except on GET (no body is sent).
        (
            Method::POST,
            &[host],
            Unknown,
            "host: svc\r\ntransfer-encoding: chunked\r\n",
            Framing::Chunked,
        ),
        (
            Method::GET,
            &[host],
            Unknown,
            "host: svc\r\n",
            Framing::None,
        ),
        // Transfer-Encoding wins over Content-Length, which is dropped.
        (
            Method::POST,
            &[host, ("content-length", "3"), ("transfer-encoding", "gzip")],
            Unknown,
            "host: svc\r\ntransfer-encoding: chunked\r\n",
            Framing::Chunked,
        ),
        // An invalid Content-Length is replaced by the body's own length.
        (
            Method::POST,
            &[host, ("content-length", "1, 2")],
            Exact(2),
            "host: svc\r\ncontent-length: 2\r\n",
            Framing::Length(2),
        ),
    ];
    for (method, pairs, body, fields, framing) in cases {
        let (text, got) = head(method.clone(), "/a?b=1", pairs, *body);
        let want = format!("{method} /a?b=1 HTTP/1.1\r\n{fields}\r\n");
        assert_eq!(text, want, "{method} {pairs:?} {body:?}");
        assert_eq!(got, *framing, "{method} {pairs:?} {body:?}");
    }
}

#[test]
fn repeated_fields_are_written_once_per_value() {
    let (text, _) = head(
        Method::GET,
        "/x",
        &[("cookie", "a=1"), ("cookie", "b=2")],
        BodyShape::Empty,
    );
    assert_eq!(
        text,
        "GET /x HTTP/1.1\r\ncookie: a=1\r\ncookie: b=2\r\n\r\n"
    );
}

#[test]
fn the_gateways_fields_replace_the_clients() {
    let attempt = HeaderName::from_static("x-envoy-attempt-count");
    let h = headers(&[("x-envoy-attempt-count", "7"), ("accept", "*/*")]);
    let set = [
        (&attempt, HeaderValue::from_static("2")),
        (&header::HOST, HeaderValue::from_static("svc:8080")),
    ];
    let head = RequestHead {
        method: &Method::GET,
        path: "/",
        headers: &h,
        set: &set,
        rendered: &[],
    };
    let mut out = BytesMut::new();
    write_request_head(&mut out, &head, BodyShape::Empty);
    assert_eq!(
        &out[..],
        b"GET / HTTP/1.1\r\naccept: */*\r\nx-envoy-attempt-count: 2\r\nhost: svc:8080\r\n\r\n"
    );
}

#[test]
fn chunk_framing() {
    let mut out = BytesMut::new();
    put_chunk_size(&mut out, 0x1a2b);
    put_chunk(&mut out, b"z");
    put_last_chunk(
        &mut out,
        &headers(&[("x-sum", "9"), ("content-length", "1")]),
    );
    assert_eq!(&out[..], b"1a2b\r\n1\r\nz\r\n0\r\nx-sum: 9\r\n\r\n");
}

#[test]
fn content_lengths() {
    let cases: &[(&[&str], Option<u64>)] = &[
        (&[], None),
        (&["0"], Some(0)),
        (&["42"], Some(42)),
        (&["42", "42"], Some(42)),
        (&["42, 42"], Some(42)),
        (&["42", "43"], None),
        (&["+4"], None),
        (&["-1"], None),
        (&["4 2"], None),
        (&[""], None),
        (&["99999999999999999999"], None),
    ];
    for (values, want) in cases {
        let pairs: Vec<_> = values.iter().map(|v| ("content-length", *v)).collect();
        assert_eq!(content_length(&headers(&pairs)), *want, "{values:?}");
    }
}

fn parse(bytes: &[u8]) -> (Result<Option<ResponseHead>, HeadError>, usize) {
    let mut buf = BytesMut::from(bytes);
    let r = parse_response_head(&mut buf);
    (r, buf.len())
}

#[test]
fn response_heads() {
    let (r, left) = parse(b"HTTP/1.1 201 Created\r\nA: 1\r\nb:  two \r\na: 3\r\n\r\nbody");
    let h = r.unwrap().unwrap();
    assert_eq!(h.status, StatusCode::CREATED);
    assert_eq!(h.version, Version::HTTP_11);
    let a: Vec<_> = h.headers.get_all("a").iter().collect();
    assert_eq!(a, ["1", "3"]);
    assert_eq!(h.headers["b"], "two");
    assert_eq!(left, 4, "the body stays in the buffer");

    let (r, _) = parse(b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(r.unwrap().unwrap().version, Version::HTTP_10);

    // Not whole yet: nothing is taken.
    let (r, left) = parse(b"HTTP/1.1 200 OK\r\nA: 1\r\n");
    assert!(r.unwrap().is_none());
    assert_eq!(left, 23);
}

#[test]
fn bad_response_heads_are_protocol_errors() {
    let too_many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
    let too_many = format!("HTTP/1.1 200 OK\r\n{too_many}\r\n");
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx: {}\r\n",
        "v".repeat(MAX_HEAD_BYTES + 1)
    );
    let cases: &[(&[u8], HeadError)] = &[
        (
            b"SSH-2.0-OpenSSH\r\n\r\n",
            HeadError::Invalid(httparse::Error::Version),
        ),
        (
            b"HTTP/1.1 2000 OK\r\n\r\n",
            HeadError::Invalid(httparse::Error::Status),
        ),
        (
            b"HTTP/1.1 200 OK\r\nbad name: v\r\n\r\n",
            HeadError::Invalid(httparse::Error::HeaderName),
        ),
        (
            b"HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n",
            HeadError::Invalid(httparse::Error::HeaderValue),
        ),
        (
            b"HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            HeadError::Invalid(httparse::Error::HeaderName),
        ),
        (too_many.as_bytes(), HeadError::TooManyHeaders),
        (huge.as_bytes(), HeadError::TooLarge),
    ];
    for (bytes, want) in cases {
        let (r, _) = parse(bytes);
        assert_eq!(
            r.unwrap_err(),
            *want,
            "{:?}",
            String::from_utf8_lossy(&bytes[..20])
        );
    }
}

#[test]
fn response_body_framing() {
    use BodyKind::*;
    let ok = StatusCode::OK;
    let cases: &[(bool, StatusCode, Fields, Result<BodyKind, HeadError>)] = &[
        (false, ok, &[("content-length", "5")], Ok(Length(5))),
        (false, ok, &[("content-length", "0")], Ok(Empty)),
        (false, ok, &[], Ok(UntilClose)),
        (false, ok, &[("transfer-encoding", "chunked")], Ok(Chunked)),
        (
            false,
            ok,
            &[("transfer-encoding", "gzip, Chunked")],
            Ok(Chunked),
        ),
        (false, ok, &[("transfer-encoding", "gzip")], Ok(UntilClose)),
        // Transfer-Encoding overrides Content-Length.
        (
            false,
            ok,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            Ok(Chunked),
        ),
        (
            false,
            ok,
            &[("content-length", "5, 6")],
            Err(HeadError::ContentLength),
        ),
        (
            false,
            ok,
            &[("content-length", "x")],
            Err(HeadError::ContentLength),
        ),
        // No body whatever the headers say.
        (true, ok, &[("content-length", "5")], Ok(Empty)),
        (
            false,
            StatusCode::NO_CONTENT,
            &[("content-length", "5")],
            Ok(Empty),
        ),
        (
            false,
            StatusCode::NOT_MODIFIED,
            &[("content-length", "5")],
            Ok(Empty),
        ),
    ];
    for (head, status, pairs, want) in cases {
        assert_eq!(
            response_body(*head, &response(Version::HTTP_11, *status, pairs)),
            *want,
            "{pairs:?}"
        );
    }
}

/// The head of a response with `pairs`, as the codec reads it.
fn response(version: Version, status: StatusCode, pairs: Fields) -> ResponseHead {
    let mut text = format!(
        "{} {} x\r\n",
        if version == Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        status.as_u16()
    );
    for (name, value) in pairs {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    parse(text.as_bytes()).0.unwrap().unwrap()
}

#[test]
fn hop_by_hop_fields_are_read_not_kept() {
    let ok = StatusCode::OK;
    let plain = HopByHop::default();
    let close = HopByHop {
        close: true,
        ..plain
    };
    let cases: &[(StatusCode, Fields, &[&str], HopByHop)] = &[
        (
            ok,
            &[("server", "s"), ("content-length", "2")],
            &["server", "content-length"],
            plain,
        ),
        (
            ok,
            &[
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
                ("x", "1"),
            ],
            &["x"],
            HopByHop {
                keep_alive: true,
                ..plain
            },
        ),
        (ok, &[("connection", "Close")], &[], close),
        // What `Connection` lists goes too, but for the framing.
        (
            ok,
            &[
                ("connection", "close, x-secret, content-length"),
                ("x-secret", "1"),
                ("content-length", "2"),
                ("x-kept", "1"),
            ],
            &["content-length", "x-kept"],
            close,
        ),
        (
            ok,
            &[
                ("transfer-encoding", "gzip, chunked"),
                ("proxy-connection", "x"),
            ],
            &[],
            HopByHop {
                chunked: Some(true),
                ..plain
            },
        ),
        (
            ok,
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "gzip"),
            ],
            &[],
            HopByHop {
                chunked: Some(false),
                ..plain
            },
        ),
        (
            ok,
            &[
                ("upgrade", "websocket"),
                ("te", "gzip"),
                ("proxy-authenticate", "Basic"),
            ],
            &[],
            plain,
        ),
        (ok, &[("te", "trailers")], &["te"], plain),
        // A switch of protocols keeps what it switched to.
        (
            StatusCode::SWITCHING_PROTOCOLS,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
            &["upgrade"],
            plain,
        ),
    ];
    for (status, pairs, kept, hop) in cases {
        let head = response(Version::HTTP_11, *status, pairs);
        let mut names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        let mut kept = kept.to_vec();
        kept.sort_unstable();
        assert_eq!(names, kept, "{pairs:?}");
        assert_eq!(head.hop, *hop, "{pairs:?}");
    }
}

#[test]
fn keep_alive() {
    let cases: &[(Version, &[&str], bool)] = &[
        (Version::HTTP_11, &[], true),
        (Version::HTTP_11, &["close"], false),
        (Version::HTTP_11, &["foo, Close"], false),
        (Version::HTTP_10, &[], false),
        (Version::HTTP_10, &["keep-alive"], true),
    ];
    for (version, values, want) in cases {
        let pairs: Vec<_> = values.iter().map(|v| ("connection", *v)).collect();
        assert_eq!(
            keeps_alive(&response(*version, StatusCode::OK, &pairs)),
            *want,
            "{version:?} {values:?}"
        );
    }
}

/// The data, the trailers and what is left after the body.
type Dechunked = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

/// Feeds `input` to a decoder `step` bytes at a time.
fn dechunk(input: &[u8], step: usize) -> Result<Dechunked, HeadError> {
    let mut d = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match d.decode(&mut buf)? {
            Chunk::Data(b) => data.extend_from_slice(&b),
            Chunk::End(t) => return Ok((data, t, buf.to_vec())),
            Chunk::More => {
                let next = input.get(fed..(fed + step).min(input.len())).unwrap();
                if next.is_empty() {
                    return Err(HeadError::Chunked);
                }
                buf.extend_from_slice(next);
                fed += next.len();
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_whatever_the_reads() {
    let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\nA \r\n0123456789\r\n0\r\nx-sum: 7\r\n\r\nNEXT";
    for step in [1, 2, 3, 7, body.len()] {
        let (data, trailers, rest) = dechunk(body, step).unwrap();
        assert_eq!(data, b"hello world0123456789", "step {step}");
        assert_eq!(trailers.unwrap()["x-sum"], "7", "step {step}");
        // A pipelined next response stays; small steps stop before feeding it.
        assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
    }
    let (data, trailers, _) = dechunk(b"0\r\n\r\n", 1).unwrap();
    assert!(data.is_empty() && trailers.is_none());
}

#[test]
fn bad_chunked_bodies_are_refused() {
    let cases: &[&[u8]] = &[
        b"x\r\n",
        b"\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"11111111111111111\r\n",
        b"5 x\n\r\n",
        b"-5\r\n",
    ];
    for input in cases {
        assert_eq!(
            dechunk(input, 1).unwrap_err(),
            HeadError::Chunked,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}
