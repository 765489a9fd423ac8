//! A fault-injecting HTTP proxy for S3 tests. It sits on loopback between Mimeo and the real
//! S3 server and, for a share of the requests drawn from a seeded generator, answers 500, 503
//! or `SlowDown` itself, resets the connection before or in the middle of the response, or
//! stalls until the client gives up. Everything else is forwarded unchanged, one request per
//! connection (`Connection: close` both ways), so each fault hits exactly one request.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500 InternalError.
    InternalError,
    /// HTTP 503 ServiceUnavailable.
    Unavailable,
    /// HTTP 503 SlowDown (S3's throttling answer).
    SlowDown,
    /// The connection is closed after the request, before any response byte.
    ResetBeforeResponse,
    /// The server's response is forwarded half way, then the connection is closed.
    ResetMidResponse,
    /// Nothing is answered for `stall`, then the connection is closed.
    Stall,
}

impl Fault {
    /// Every fault kind, for tests that require each to have occurred.
    pub fn kinds() -> impl Iterator<Item = Fault> {
        Fault::ALL.into_iter().map(|(f, _)| f)
    }

    const ALL: [(Fault, u32); 6] = [
        (Fault::InternalError, 20),
        (Fault::Unavailable, 20),
        (Fault::SlowDown, 20),
        (Fault::ResetBeforeResponse, 15),
        (Fault::ResetMidResponse, 22),
        (Fault::Stall, 3),
    ];

    fn pick(rng: &mut fastrand::Rng) -> Fault {
        let total: u32 = Fault::ALL.iter().map(|(_, w)| w).sum();
        let mut n = rng.u32(0..total);
        for (fault, weight) in Fault::ALL {
            if n < weight {
                return fault;
            }
            n -= weight;
        }
        unreachable!()
    }
}

/// Which kind of S3 call a request is, for the counts.
fn operation(method: &str, target: &str, headers: &[(String, String)]) -> &'static str {
    let has = |name: &str| headers.iter().any(|(n, _)| n == name);
    match method {
        "GET" if has("range") => "ranged read",
        "GET" if target.contains("list-type=") || target.contains("uploads") => "list",
        "GET" => "read",
        "PUT" if target.contains("partNumber=") => "upload part",
        "PUT" => "put",
        "POST" => "multipart start/complete",
        "HEAD" => "head",
        "DELETE" => "delete",
        _ => "other",
    }
}

#[derive(Default)]
struct Counts {
    requests: u64,
    /// Faults by (kind, operation).
    faults: BTreeMap<(Fault, &'static str), u64>,
}

struct State {
    upstream: SocketAddr,
    /// Fault rate for all requests, and for some operations.
    rate: Mutex<(f64, Vec<(&'static str, f64)>)>,
    rng: Mutex<fastrand::Rng>,
    stall: Duration,
    counts: Mutex<Counts>,
    stop: AtomicBool,
}

/// A running proxy; dropping it stops accepting connections.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<State>,
    addr: SocketAddr,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (e.g. `http://127.0.0.1:9000`) that faults no
    /// request until [`FaultProxy::set_rate`]. A stalled request is held for `stall`.
    pub fn start(upstream: &str, seed: u64, stall: Duration) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            rate: Mutex::new((0.0, Vec::new())),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            stall,
            counts: Mutex::new(Counts::default()),
            stop: AtomicBool::new(false),
        });
        let accept_state = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if accept_state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let state = accept_state.clone();
                thread::spawn(move || {
                    // A client that gave up first (after a stall) is not news.
                    if let Err(e) = serve(conn, &state)
                        && e.kind() != std::io::ErrorKind::NotConnected
                    {
                        eprintln!("fault proxy: {e}");
                    }
                });
            }
        });
        FaultProxy {
            endpoint: format!("http://{addr}"),
            state,
            addr,
        }
    }

    /// Share of requests (0..=1) that get a fault from now on.
    pub fn set_rate(&self, rate: f64) {
        self.set_rates(rate, &[]);
    }

    /// Like [`FaultProxy::set_rate`], with other rates for some operations (e.g. the rarer
    /// `"upload part"`, so that a short test still hits them).
    pub fn set_rates(&self, rate: f64, per_operation: &[(&'static str, f64)]) {
        *self.state.rate.lock().unwrap() = (rate, per_operation.to_vec());
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.state.counts.lock().unwrap().requests
    }

    /// Faults injected so far by (kind, operation).
    pub fn faults(&self) -> BTreeMap<(Fault, &'static str), u64> {
        self.state.counts.lock().unwrap().faults.clone()
    }

    /// Faults injected so far.
    pub fn total_faults(&self) -> u64 {
        self.faults().values().sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// A parsed request or response head: its first line, headers (names lower-cased) and the raw
/// bytes.
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        Ok(Some(Head {
            first: first.trim_end().to_owned(),
            headers,
        }))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The head as bytes, with `Connection: close` and without `Expect`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.first);
        for (n, v) in &self.headers {
            if n != "connection" && n != "expect" {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        out.push_str("connection: close\r\n\r\n");
        out.into_bytes()
    }
}

fn serve(client: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = Head::read(&mut reader)? else {
        return Ok(());
    };
    assert!(
        head.get("transfer-encoding").is_none(),
        "the proxy does not forward chunked request bodies: {}",
        head.first
    );
    if head
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let len: usize = head
        .get("content-length")
        .map_or(0, |v| v.parse().expect("numeric content-length"));
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;

    let mut parts = head.first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let op = operation(method, target, &head.headers);
    let fault = {
        let rate = {
            let rates = state.rate.lock().unwrap();
            rates
                .1
                .iter()
                .find(|(o, _)| *o == op)
                .map_or(rates.0, |(_, r)| *r)
        };
        let mut rng = state.rng.lock().unwrap();
        (rng.f64() < rate).then(|| Fault::pick(&mut rng))
    };
    {
        let mut counts = state.counts.lock().unwrap();
        counts.requests += 1;
        if let Some(f) = fault {
            *counts.faults.entry((f, op)).or_default() += 1;
        }
    }

    match fault {
        Some(Fault::InternalError) => error_response(&mut client, 500, "InternalError"),
        Some(Fault::Unavailable) => error_response(&mut client, 503, "ServiceUnavailable"),
        Some(Fault::SlowDown) => error_response(&mut client, 503, "SlowDown"),
        Some(Fault::ResetBeforeResponse) => client.shutdown(Shutdown::Both),
        Some(Fault::Stall) => {
            thread::sleep(state.stall);
            client.shutdown(Shutdown::Both)
        }
        None | Some(Fault::ResetMidResponse) => {
            // The request is sent from another thread while this one reads the response: a
            // server may answer (e.g. 412) before it has read the body, then close.
            let upstream = TcpStream::connect(state.upstream)?;
            let mut sender = upstream.try_clone()?;
            let request = [head.to_bytes(), body].concat();
            let sending = thread::spawn(move || sender.write_all(&request));
            let mut up = BufReader::new(upstream);
            let Some(response) = Head::read(&mut up)? else {
                eprintln!(
                    "fault proxy: the server closed without answering {}",
                    head.first
                );
                return client.shutdown(Shutdown::Both);
            };
            let rest = read_body(&mut up, method, &response)?;
            let _ = sending.join();
            let mut bytes = response.to_bytes();
            bytes.extend_from_slice(&rest);
            if fault.is_some() {
                // Half of the body, or half of the head when there is no body.
                let cut = if rest.is_empty() {
                    bytes.len() / 2
                } else {
                    bytes.len() - rest.len() / 2
                };
                bytes.truncate(cut);
            }
            client.write_all(&bytes)?;
            client.shutdown(Shutdown::Both)
        }
    }
}

/// The body of `response` to a `method` request: exactly its `Content-Length` bytes when it
/// has one, else everything up to the close. A server that answers before it has read the
/// request (e.g. MinIO's 412 to a conditional put) then resets the connection; reading only
/// the announced bytes relays that answer instead of the reset.
fn read_body(up: &mut impl Read, method: &str, response: &Head) -> std::io::Result<Vec<u8>> {
    let status = response.first.split(' ').nth(1).unwrap_or("");
    if method == "HEAD" || status == "204" || status == "304" {
        return Ok(Vec::new());
    }
    let mut body = Vec::new();
    match response.get("content-length") {
        Some(len) => {
            body.resize(len.parse().expect("numeric content-length"), 0);
            up.read_exact(&mut body)?;
        }
        None => {
            up.read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

fn error_response(client: &mut TcpStream, status: u16, code: &str) -> std::io::Result<()> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    let reason = if status == 500 {
        "Internal Server Error"
    } else {
        "Service Unavailable"
    };
    write!(
        client,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    client.shutdown(Shutdown::Both)
}
