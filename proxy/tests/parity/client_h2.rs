//! The HTTP/2 client: the h2 crate, for control of every field.

use super::*;

pub(crate) struct H2Client {
    pub(crate) send: h2::client::SendRequest<Bytes>,
    pub(crate) stream: Option<h2::SendStream<Bytes>>,
}

impl H2Client {
    pub(crate) async fn connect(b: &Bench, who: Who) -> H2Client {
        H2Client {
            send: h2_connect(&b.w, &b.p, b.who(who)).await,
            stream: None,
        }
    }

    pub(crate) async fn send(&mut self, b: &Bench, s: &Scenario, fallback: bool) -> Answer {
        let (authority, hosts): (String, Vec<String>) = match s.host {
            Host::Plain => (b.port("localhost:{port}"), vec![]),
            Host::Odd {
                authority, h2_host, ..
            } => (
                b.port(authority),
                h2_host.iter().map(|h| b.port(h)).collect(),
            ),
        };
        let mut req = http::Request::builder()
            .method(s.method)
            .uri(format!("https://{authority}{}", s.target));
        for h in &hosts {
            req = req.header("host", h.as_str());
        }
        for (n, v) in s.headers {
            req = req.header(n.to_ascii_lowercase(), *v);
        }
        let pieces: Vec<Vec<u8>> = match s.body {
            Body::None => vec![],
            Body::Length(n) => {
                req = req.header("content-length", n.to_string());
                vec![body_bytes(n)]
            }
            Body::Chunked(sizes) => {
                let all = body_bytes(sizes.iter().sum());
                let mut at = 0;
                sizes
                    .iter()
                    .map(|n| {
                        at += n;
                        all[at - n..at].to_vec()
                    })
                    .collect()
            }
            Body::Early => {
                req = req.header("content-length", "100000000");
                vec![body_bytes(EARLY_BYTES)]
            }
        };
        if fallback {
            req = req.header("expect", "100-continue");
        }
        let req = req.body(()).unwrap();
        let mut a = Answer::default();
        let mut send = match self.send.clone().ready().await {
            Ok(s) => s,
            Err(e) => {
                a.error = format!("connection: {e}");
                return a;
            }
        };
        let (resp, mut stream) = match send.send_request(req, pieces.is_empty()) {
            Ok(r) => r,
            Err(e) => {
                a.error = format!("send: {e}");
                return a;
            }
        };
        let ends = !matches!(s.body, Body::Early);
        for (i, piece) in pieces.iter().enumerate() {
            let last = ends && i + 1 == pieces.len();
            if let Err(e) = stream.send_data(Bytes::copy_from_slice(piece), last) {
                a.error = format!("send data: {e}");
            }
        }
        self.stream = Some(stream);
        let mut resp = resp;
        let answer = async {
            // Interim (1xx) answers come before the final one, which ends them.
            while let Some(Ok(interim)) =
                std::future::poll_fn(|cx| resp.poll_informational(cx)).await
            {
                a.interim.push(interim.status().as_u16());
            }
            resp.await
        };
        let resp = match tokio::time::timeout(Duration::from_secs(20), answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                a.error = format!("response: {e}");
                return a;
            }
            Err(_) => {
                a.error = "no response in 20 s".into();
                return a;
            }
        };
        let (parts, mut body) = resp.into_parts();
        a.status = parts.status.as_u16();
        a.headers = parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // Whether the HEADERS frame itself ended the stream: nothing about it is pending.
        a.framing = if body.is_end_stream() {
            "headers end the stream".into()
        } else {
            "data frames".into()
        };
        let mut released = false;
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    a.body.extend_from_slice(&chunk);
                    if !released && s.release_at.is_some_and(|at| a.body.len() >= at) {
                        released = true;
                        b.up.release();
                    }
                }
                Err(e) => {
                    a.error = format!("body: {e}");
                    break;
                }
            }
        }
        a
    }

    pub(crate) async fn leave(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.send_reset(h2::Reason::CANCEL);
        }
    }

    pub(crate) async fn probe(&mut self, b: &Bench) -> String {
        let req = http::Request::builder()
            .method("GET")
            .uri(b.port("https://localhost:{port}/probe"))
            .body(())
            .unwrap();
        let Ok(mut send) = self.send.clone().ready().await else {
            return "closed".into();
        };
        let Ok((resp, _)) = send.send_request(req, true) else {
            return "closed".into();
        };
        match tokio::time::timeout(Duration::from_secs(20), resp).await {
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                let mut body = r.into_body();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                format!("reused (probe {status})")
            }
            Ok(Err(e)) => format!("closed ({e})"),
            Err(_) => "no answer in 20 s".into(),
        }
    }
}
