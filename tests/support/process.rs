//! `herald serve` as a child process: start it, read its banner, stop it; the sandbox's
//! durable send log; a small API client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use shared::embedded::SANDBOX_SEND_LOG;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `herald serve` child process.
pub struct Serve {
    pub child: Child,
    pub url: String,
    /// Stdout lines up to and including the `herald listening on` line.
    pub banner: Vec<String>,
    pub stderr_path: PathBuf,
}

impl Serve {
    /// Starts `herald serve` on `data_dir` with more `args`, and waits for its listening line.
    pub async fn start(bin: &Path, data_dir: &Path, stderr_path: PathBuf, args: &[&str]) -> Serve {
        Serve::start_command(serve_command(bin, data_dir, args), stderr_path).await
    }

    /// As [`Serve::start`], logging at `level` (`HERALD_LOG`) rather than warnings only.
    pub async fn start_logging(
        bin: &Path,
        data_dir: &Path,
        stderr_path: PathBuf,
        args: &[&str],
        level: &str,
    ) -> Serve {
        let mut command = serve_command(bin, data_dir, args);
        command.env("HERALD_LOG", level);
        Serve::start_command(command, stderr_path).await
    }

    async fn start_command(mut command: Command, stderr_path: PathBuf) -> Serve {
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn herald serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let read_banner = async {
            while let Some(line) = lines.next_line().await.expect("read herald stdout") {
                banner.push(line.clone());
                if let Some(rest) = line.strip_prefix("herald listening on ") {
                    return Some(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
            None
        };
        let url = match tokio::time::timeout(Duration::from_secs(60), read_banner).await {
            Ok(Some(url)) => url,
            Ok(None) => {
                let status = child.wait().await.expect("wait for herald serve");
                panic!(
                    "herald serve exited ({status}) before listening; stdout: {banner:?}; stderr:\n{}",
                    read_lossy(&stderr_path)
                );
            }
            Err(_) => panic!(
                "herald serve printed no `herald listening on` line within 60 s; stdout: {banner:?}; stderr:\n{}",
                read_lossy(&stderr_path)
            ),
        };
        // Keep draining stdout so that a later print never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Serve {
            child,
            url,
            banner,
            stderr_path,
        }
    }

    /// SIGKILL (std/tokio `kill` is SIGKILL on unix), then reap the process.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill -9 herald serve");
    }

    /// SIGTERM (through `kill -TERM`), then waits up to `within` for the exit; returns the
    /// exit status and how long the exit took. Panics if the process outlives `within`.
    pub async fn terminate(mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.id().expect("herald serve is running");
        let started = std::time::Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed");
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => (status.expect("wait for herald serve"), started.elapsed()),
            Err(_) => panic!(
                "herald serve did not exit within {within:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }
}

/// `herald serve` on a free loopback port and `data_dir`, with more `args`, logging warnings.
pub fn serve_command(bin: &Path, data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        // Each server's /metrics on a port of its own, unless the test picks one.
        .args(match args.contains(&"--metrics-bind") {
            true => &[][..],
            false => &["--metrics-bind", "127.0.0.1:0"][..],
        })
        .env("HERALD_LOG", "warn")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_LANE_WORKERS")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `herald keys create`: the key is the last line of stdout.
pub fn create_key(bin: &Path, data_dir: &Path, tenant: &str) -> String {
    let out = std::process::Command::new(bin)
        .args(["keys", "create", "--tenant", tenant, "--data-dir"])
        .arg(data_dir)
        .env("HERALD_LOG", "warn")
        .output()
        .expect("run herald keys create");
    assert!(
        out.status.success(),
        "herald keys create failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let key = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        key.starts_with("hk_"),
        "no key on the last line of stdout: {stdout:?}"
    );
    key
}

/// The sandbox send log's lines: (message id, attempt).
pub fn send_log(data_dir: &Path) -> Vec<(String, u32)> {
    let text = read_lossy(&data_dir.join(SANDBOX_SEND_LOG));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the send log ends with a partial line"
    );
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 4, "bad send log line {line:?}");
            let attempt = f[2]
                .parse()
                .unwrap_or_else(|_| panic!("bad attempt in {line:?}"));
            (f[1].to_owned(), attempt)
        })
        .collect()
}

pub fn send_log_len(data_dir: &Path) -> usize {
    std::fs::read(data_dir.join(SANDBOX_SEND_LOG))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
    pub key: String,
}

impl Api {
    pub async fn get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = res.status();
        let reply: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "POST {path}: {reply}");
        reply
    }

    /// Lanes' depth + in-flight, summed.
    pub async fn queued_work(&self) -> u64 {
        let stats = self.get("/v1/stats/queue").await;
        stats["lanes"]
            .as_array()
            .expect("lanes")
            .iter()
            .map(|l| l["depth"].as_u64().unwrap_or(0) + l["in_flight"].as_u64().unwrap_or(0))
            .sum()
    }

    /// This tenant's message counts by status, over every channel and gateway.
    pub async fn counts(&self) -> BTreeMap<String, u64> {
        let stats = self.get("/v1/stats/channels").await;
        let mut counts = BTreeMap::new();
        for ch in stats["channels"].as_array().expect("channels") {
            for (status, n) in ch["counts"].as_object().expect("counts") {
                *counts.entry(status.clone()).or_default() += n.as_u64().expect("count");
            }
        }
        counts
    }
}
