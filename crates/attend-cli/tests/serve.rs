//! `attend serve` against hostile clients, on loopback, with a real server: connections held
//! open, requests that name another host or come from another site, bodies it should not
//! read, clients that leave their runs, and a stop while a client holds half a request. Each
//! part is bounded (a few seconds).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attend"));
    cmd.args(["serve", "--port", "0"]).args(args);
    start_command(cmd)
}

/// Starts `cmd` (an `attend serve --port 0`) and reads the port it listens on from its log.
fn start_command(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let port = loop {
        let mut line = String::new();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "serve ended: {log}"
        );
        log.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split('/').next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // keep draining its log so that it never blocks on a full pipe
    std::thread::spawn(move || for _ in lines.lines() {});
    Server { child, port }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `raw` and reads the whole answer: (status, body).
fn ask(port: u16, raw: &str) -> (u16, String) {
    let mut s = connect(port);
    s.write_all(raw.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn post(port: u16, headers: &str, body: &str) -> String {
    format!(
        "POST /api/view HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn json_post(port: u16, body: &str) -> String {
    post(port, "Content-Type: application/json\r\n", body)
}

#[test]
fn other_hosts_other_sites_and_other_content_types_are_refused() {
    let s = start(&["--model", "toy-winograd"]);
    let p = s.port;
    let get = |host: &str, extra: &str| {
        ask(
            p,
            &format!(
                "GET /api/models HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
            ),
        )
    };
    for host in [
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        "localhost".into(),
        format!("[::1]:{p}"),
    ] {
        assert_eq!(get(&host, "").0, 200, "{host}");
    }
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own name
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1.evil.example",
        "localhost:x",
    ] {
        let (status, body) = get(host, "");
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    // another site's script or form: its Origin
    let o = |origin: &str| get(&format!("127.0.0.1:{p}"), &format!("Origin: {origin}\r\n")).0;
    assert_eq!(o(&format!("http://127.0.0.1:{p}")), 200);
    assert_eq!(o("http://evil.example"), 403);
    assert_eq!(o("null"), 403);
    // a plain form post (text/plain, or no type) cannot drive a model
    let body = r#"{"model": "toy-winograd", "text": "it ="}"#;
    assert_eq!(ask(p, &json_post(p, body)).0, 200);
    for ct in [
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "",
    ] {
        assert_eq!(ask(p, &post(p, ct, body)).0, 415, "{ct:?}");
    }
    // a body announced too large: 413 at once, nothing waited for
    let t0 = Instant::now();
    let (status, _) = ask(
        p,
        &format!(
            "POST /api/view HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Type: application/json\r\n\
             Content-Length: 1000000000000\r\nConnection: close\r\n\r\n{{"
        ),
    );
    assert_eq!(status, 413);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

/// The server under a limit of 64 file descriptors (as a small `ulimit -n` leaves it), with
/// a hundred connections held open by silent clients and clients that send half a request
/// line: a real request is still answered quickly, because the oldest idle connections are
/// closed to make room (a server that only waited for them would never accept it).
#[test]
fn held_connections_do_not_stop_a_real_request() {
    let sh = Command::new("sh").arg("-c").arg("ulimit -n 64").status();
    if !sh.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no sh with ulimit here");
        return;
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" serve --port 0 --model toy-winograd --max-connections 16")
        .arg(env!("CARGO_BIN_EXE_attend"));
    let s = start_command(cmd);
    let p = s.port;
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..100 {
        let mut c = connect(p);
        if i % 4 == 0 {
            c.write_all(b"POST /api/vi").unwrap();
        }
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (status, body) = ask(
        p,
        &json_post(p, r#"{"model": "toy-winograd", "text": "it ="}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // the oldest held connection was closed to make room: it reads the end
    held[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(held[0].read(&mut buf).unwrap_or(0), 0);
    drop(held);
}

#[test]
fn a_stop_is_not_held_by_half_a_request() {
    let mut s = start(&["--model", "toy-winograd"]);
    let p = s.port;
    let mut half = connect(p);
    half.write_all(b"POST /api/view HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .unwrap();
    // and a client that sends a request and never reads its answer
    let mut deaf = connect(p);
    deaf.write_all(json_post(p, r#"{"model": "toy-winograd", "text": "it ="}"#).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .is_ok_and(|st| st.success());
    if !killed {
        eprintln!("skipped: no `kill` command to send SIGTERM");
        return;
    }
    loop {
        if s.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGTERM did not stop the server in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((half, deaf));
}

/// Runs whose clients left: ones still queued are skipped, the running one stops at its next
/// token (or layer), so a real request waits for none of them. (SmolLM2 counting for 400
/// tokens: seconds a run; the clients leave at once.)
#[test]
fn abandoned_runs_do_not_keep_a_model_busy() {
    let s = start(&["--model", "smollm2", "--max-tokens", "400", "--queue", "16"]);
    let p = s.port;
    let body = serde_json::json!({
        "model": "smollm2", "text": "1, 2, 3, 4, 5,", "mode": "generate", "max_tokens": 400
    })
    .to_string();
    // one long run, waited for: how long a run takes here
    let t0 = Instant::now();
    let (status, answer) = ask(p, &json_post(p, &body));
    assert_eq!(status, 200, "{answer}");
    let one = t0.elapsed();
    // six clients send the same and leave
    for _ in 0..6 {
        let mut c = connect(p);
        c.write_all(json_post(p, &body).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let short = serde_json::json!({"model": "smollm2", "text": "it was"}).to_string();
    let (status, answer) = ask(p, &json_post(p, &short));
    let waited = t0.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert!(
        waited * 2 < one,
        "a real request waited {waited:?}; one abandoned run alone takes {one:?}"
    );
}
