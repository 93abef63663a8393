//! Starting a broker for integration tests, as `docs/TESTING-CONTRACT.md` describes.
//!
//! [`Broker::start`] writes a config with `[listeners] amqp = "127.0.0.1:0"` into a fresh temporary
//! directory, runs `tributary serve --config CONFIG --data-dir DIR` (the binary Cargo built for
//! this package, or `$TRIBUTARY_BIN`), reads the chosen address back from the
//! `listening protocol=amqp addr=...` log line on stderr and keeps draining stderr. The process
//! is killed and the directory removed when the [`Broker`] is dropped.
//!
//! With `TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT` nothing is started: the tests run against that
//! external RabbitMQ instead, which is how their expectations are checked against the reference.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// How long the broker may take to log its listening address.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any single awaited step of a test.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

const LISTEN_MARKER: &str = "listening protocol=amqp addr=";

/// A broker for one test: our own child process, or an external RabbitMQ.
pub struct Broker {
    /// `host:port` of the AMQP listener.
    pub addr: String,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<String>>,
}

impl Broker {
    /// Start a broker with the contract's default config (panics with the broker's stderr if it
    /// does not come up within [`START_TIMEOUT`]).
    pub fn start() -> Broker {
        Self::start_with_config("")
    }

    /// Start a broker whose config gets `extra` TOML appended.
    pub fn start_with_config(extra: &str) -> Broker {
        if let Some(addr) = external_target() {
            return Broker {
                addr,
                child: None,
                dir: None,
                stderr: Arc::default(),
            };
        }

        let dir = tempfile::Builder::new()
            .prefix("tributary-lapin-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).expect("create data dir");
        let config = dir.path().join("tributary.toml");
        std::fs::write(
            &config,
            format!(
                "[listeners]\namqp = \"127.0.0.1:0\"\nmqtt = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nxmpp = \"127.0.0.1:0\"\nxmpps = \"127.0.0.1:0\"\nmqtts = \"127.0.0.1:0\"\namqps = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\ncluster = \"\"\nxmpp_server = \"127.0.0.1:0\"\nxmpps_server = \"127.0.0.1:0\"\n\n\
                 [amqp]\nheartbeat = 60\nframe_max = 131072\nchannel_max = 2047\n\n\
                 [log]\nlevel = \"info\"\n\n{extra}\n"
            ),
        )
        .expect("write config");

        let bin = binary();
        let mut child = Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let pipe = child.stderr.take().expect("stderr is piped");
        let log = Arc::clone(&stderr);
        // Drain stderr for the broker's whole life, so it never blocks on a full pipe; report the
        // first listening address. The sender is dropped at EOF, which tells start() the broker died.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(tx_ref) = &tx
                    && let Some(addr) = parse_listen_addr(&line)
                {
                    let _ = tx_ref.send(addr);
                    tx = None;
                }
                let mut log = log.lock().unwrap();
                if log.len() < 1 << 20 {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });

        let mut broker = Broker {
            addr: String::new(),
            child: Some(child),
            dir: Some(dir),
            stderr,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => broker.addr = addr,
            Err(e) => {
                let status = broker
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "broker did not log `{LISTEN_MARKER}...` ({e}; exit status {status:?})\nbroker stderr:\n{}",
                    broker.stderr()
                );
            }
        }
        broker
    }

    /// True when the tests run against an external RabbitMQ (no CLI, no log, no process).
    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    /// AMQP URI for `guest`/`guest` on vhost `/`.
    pub fn uri(&self) -> String {
        self.uri_as("guest", "guest")
    }

    /// AMQP URI for the given credentials on vhost `/`.
    pub fn uri_as(&self, user: &str, password: &str) -> String {
        format!("amqp://{user}:{password}@{}/%2f", self.addr)
    }

    /// Everything the broker wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The broker's data directory (None for an external broker).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("data"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `dir` (a TempDir) removes itself when dropped.
    }
}

/// The broker binary: `$TRIBUTARY_BIN`, else the one Cargo built for this package.
pub fn binary() -> PathBuf {
    std::env::var_os("TRIBUTARY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_tributary")).to_path_buf())
}

/// `TRIBUTARY_TEST_TARGET=rabbitmq:HOST:PORT` → `Some("HOST:PORT")`.
pub fn external_target() -> Option<String> {
    let target = std::env::var("TRIBUTARY_TEST_TARGET").ok()?;
    let rest = target.strip_prefix("rabbitmq:").unwrap_or_else(|| {
        panic!("TRIBUTARY_TEST_TARGET must be rabbitmq:HOST:PORT, got {target:?}")
    });
    let (host, port) = rest.rsplit_once(':').unwrap_or_else(|| {
        panic!("TRIBUTARY_TEST_TARGET must be rabbitmq:HOST:PORT, got {target:?}")
    });
    port.parse::<u16>()
        .unwrap_or_else(|_| panic!("bad port in TRIBUTARY_TEST_TARGET={target:?}"));
    Some(format!("{host}:{port}"))
}

/// The `addr` of a `listening protocol=amqp addr=(\S+)` log line.
fn parse_listen_addr(line: &str) -> Option<String> {
    let start = line.find(LISTEN_MARKER)? + LISTEN_MARKER.len();
    let addr: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::parse_listen_addr;

    #[test]
    fn parses_the_contract_log_line() {
        assert_eq!(
            parse_listen_addr(
                "2026-01-01T00:00:00Z  INFO tributary: listening protocol=amqp addr=127.0.0.1:40123"
            ),
            Some("127.0.0.1:40123".to_string())
        );
        assert_eq!(
            parse_listen_addr("INFO listening protocol=amqp addr=[::1]:5672 extra=1"),
            Some("[::1]:5672".to_string())
        );
        assert_eq!(
            parse_listen_addr("listening protocol=mqtt addr=127.0.0.1:1883"),
            None
        );
    }
}
