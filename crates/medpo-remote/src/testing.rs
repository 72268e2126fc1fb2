//! A scripted OpenAI-compatible server on a raw loopback socket, for tests of callers (feature
//! `test-support`): each connection's request is read, then answered with the bytes `reply`
//! gives for it, or held open without an answer (`None`: a silent server).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

/// One request the server read.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which connection, from 0.
    pub index: usize,
    /// Request line and headers, as sent.
    pub head: String,
    pub body: String,
}

/// Starts the server; returns its base URL (`http://127.0.0.1:PORT/v1`).
pub fn serve(reply: impl Fn(&Request) -> Option<Vec<u8>> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { break };
            let Ok(clone) = conn.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut head = String::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let request = Request { index: i, head, body: String::from_utf8_lossy(&body).into_owned() };
            match reply(&request) {
                Some(bytes) => {
                    let _ = conn.write_all(&bytes);
                    let _ = conn.flush();
                }
                None => held.push(conn),
            }
        }
    });
    format!("http://{addr}/v1")
}

/// A JSON body with `status`, as an HTTP response.
pub fn json_response(status: u16, body: &str) -> Vec<u8> {
    let reason = if status == 200 { "OK" } else { "Error" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A whole `chat.completion` answer with `content`, as an HTTP response.
pub fn completion(content: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    })
    .to_string();
    json_response(200, &body)
}

/// A streamed answer made of `pieces`, ending with `[DONE]` when `done` (else it breaks off).
pub fn stream(pieces: &[&str], done: bool) -> Vec<u8> {
    let mut s = String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    for p in pieces {
        let chunk = serde_json::json!({"id": "x", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    if done {
        s.push_str("data: [DONE]\n\n");
    }
    s.into_bytes()
}
