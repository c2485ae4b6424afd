//! The outbound webhook receiver (`webhook_receiver.py`): a Python process that verifies each
//! delivery with the `standardwebhooks` package and logs it, answering statuses from a plan.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Receiver {
    pub url: String,
    child: Child,
    secrets: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = root.join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} not found: the webhook tests verify deliveries with the Python `standardwebhooks` \
         package; install it with ./scripts/python-tools.sh",
        venv.display()
    );
    venv
}

impl Receiver {
    /// Starts a receiver answering `plan` (e.g. `"500,500,sleep,200"`; `hang` logs the request
    /// at once and holds it for 60 s), then 200s.
    pub fn start(plan: &str) -> Receiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let (secrets, log) = (
            dir.path().join("secrets.json"),
            dir.path().join("log.jsonl"),
        );
        std::fs::write(&secrets, "[]").expect("secrets file");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg("--secrets")
            .arg(&secrets)
            .arg("--log")
            .arg(&log)
            .arg("--plan")
            .arg(plan)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the receiver starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("receiver stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the receiver prints its port");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("receiver said {line:?}, not its port"));
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            child,
            secrets,
            log,
            _dir: dir,
        }
    }

    /// The secrets it verifies with, in order (their indexes are each line's `verified_by`).
    pub fn trust(&self, secrets: &[&str]) {
        std::fs::write(&self.secrets, serde_json::to_string(secrets).expect("json"))
            .expect("secrets file");
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to a minute: a generous bound, reached only when a test fails) until some
    /// request passes `ready`; returns all requests then.
    pub async fn wait_for(&self, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.requests();
            if ready(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "receiver never got {what}: {got:#?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
