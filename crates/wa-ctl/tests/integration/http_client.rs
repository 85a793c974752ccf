//! A small blocking HTTP/1.1 client over `std::net::TcpStream` for the
//! HTTP API's tests (issue #11): one request per connection
//! (`Connection: close`), every read and write under a deadline, and a
//! reader of Server-Sent Events. Deliberately plain: the tests see the
//! bytes the server sends, headers and all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A request to `127.0.0.1:port`.
pub struct Req<'a> {
    pub port: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub headers: Vec<(&'a str, String)>,
    pub body: Option<Vec<u8>>,
}

impl<'a> Req<'a> {
    pub fn get(port: u16, path: &'a str) -> Req<'a> {
        Req {
            port,
            method: "GET",
            path,
            token: None,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post(port: u16, path: &'a str) -> Req<'a> {
        Req {
            method: "POST",
            ..Req::get(port, path)
        }
    }

    pub fn token(mut self, token: &'a str) -> Req<'a> {
        self.token = Some(token);
        self
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Req<'a> {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req<'a> {
        self.body = Some(body.into());
        self
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("cannot connect to 127.0.0.1:{}: {e}", self.port));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    fn head(&self) -> String {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
            self.method, self.path, self.port
        );
        if let Some(token) = self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match &self.body {
            Some(body) => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
            None if self.method == "POST" => head.push_str("Content-Length: 0\r\n"),
            None => {}
        }
        head.push_str("\r\n");
        head
    }

    /// Sends the request and reads the whole answer.
    pub fn send(self) -> Reply {
        let mut stream = self.connect();
        stream.write_all(self.head().as_bytes()).unwrap();
        if let Some(body) = &self.body {
            // The server may answer (413) and close before reading it all.
            let _ = stream.write_all(body);
        }
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        let mut body = Vec::new();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            reader.read_to_end(&mut body).unwrap();
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Opens an event stream: the status, the headers, and a reader of its
    /// messages.
    pub fn stream(self) -> (u16, Vec<(String, String)>, Sse) {
        let mut stream = self.connect();
        stream.write_all(self.head().as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        (
            status,
            headers,
            Sse {
                reader,
                chunked,
                pending: String::new(),
            },
        )
    }
}

fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

/// One Server-Sent Events message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads the messages of an event stream.
pub struct Sse {
    reader: BufReader<TcpStream>,
    chunked: bool,
    /// Decoded text not yet split into messages.
    pending: String,
}

impl Sse {
    /// The next message (comments skipped), or `None` at the deadline.
    pub fn next(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut message = Message::default();
                let mut any = false;
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => message.id = Some(value.to_owned()),
                        "event" => message.event = Some(value.to_owned()),
                        "data" => {
                            if !message.data.is_empty() {
                                message.data.push('\n');
                            }
                            message.data.push_str(value);
                        }
                        _ => continue,
                    }
                    any = true;
                }
                if any {
                    return Some(message);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.read_some() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(e) => panic!("event stream: {e}"),
            }
        }
    }

    /// Reads more of the stream into `pending`; `false` at its end.
    fn read_some(&mut self) -> std::io::Result<bool> {
        if self.chunked {
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                return Ok(false);
            }
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|e| std::io::Error::other(format!("bad chunk size {size:?}: {e}")))?;
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(false);
            }
            self.pending
                .push_str(&String::from_utf8_lossy(&chunk[..size]).replace("\r\n", "\n"));
        } else {
            let mut buf = [0u8; 4096];
            let n = self.reader.read(&mut buf)?;
            if n == 0 {
                return Ok(false);
            }
            self.pending
                .push_str(&String::from_utf8_lossy(&buf[..n]).replace("\r\n", "\n"));
        }
        Ok(true)
    }
}
