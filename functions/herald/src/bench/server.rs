//! The server under test: a `herald serve` child process on a data directory, so its memory
//! and CPU are its own and not the load generator's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cli::BenchArgs;

pub struct Server {
    child: Child,
    pid: u32,
    pub url: String,
    pub key: String,
    pub dir: PathBuf,
}

impl Server {
    /// Starts `herald serve` on `dir`; `key` is the bench tenant's key when the directory was
    /// used before (a fresh one prints the `dev` tenant's key at start).
    pub async fn start(
        args: &BenchArgs,
        dir: &Path,
        workers: bool,
        key: Option<&str>,
    ) -> anyhow::Result<Server> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("serve")
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("HERALD_LOG", "warn")
            .env_remove("HERALD_CONFIG")
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(spec) = &args.lane_workers {
            cmd.args(["--lane-workers", spec]);
        }
        if !workers {
            cmd.arg("--no-workers");
        }
        let mut child = cmd.spawn().context("starting `herald serve`")?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (url, printed_key) = tokio::time::timeout(Duration::from_secs(60), read_banner(stdout))
            .await
            .context("the server did not start within 60 s")??;
        let key = match (printed_key, key) {
            (Some(k), _) => k,
            (None, Some(k)) => k.to_owned(),
            (None, None) => bail!("the server printed no API key (is {} new?)", dir.display()),
        };
        Ok(Server {
            child,
            pid,
            url,
            key,
            dir: dir.to_owned(),
        })
    }

    /// The child's peak resident memory so far (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        peak_rss_mb(&format!("/proc/{}/status", self.pid))
    }

    /// Stops the server with SIGTERM (it finishes what it holds) and returns its peak RSS.
    pub async fn stop(mut self) -> anyhow::Result<f64> {
        let rss = self.peak_rss_mb();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("could not signal the server");
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(exit) => match exit? {
                code if code.success() => Ok(rss),
                code => bail!("the server exited with {code}"),
            },
            Err(_) => {
                self.child.start_kill()?;
                bail!("the server did not stop within 60 s of SIGTERM")
            }
        }
    }

    /// Messages queued or in flight, from `GET /v1/stats/queue`.
    pub async fn backlog(
        &self,
        client: &reqwest::Client,
        lane: Option<&str>,
    ) -> anyhow::Result<u64> {
        let stats: Value = client
            .get(format!("{}/v1/stats/queue", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let lanes = stats["lanes"]
            .as_array()
            .context("no lanes in the queue stats")?;
        Ok(lanes
            .iter()
            .filter(|l| lane.is_none_or(|want| l["lane"] == want))
            .map(|l| l["depth"].as_u64().unwrap_or(0) + l["in_flight"].as_u64().unwrap_or(0))
            .sum())
    }
}

/// Reads the start-up lines: the `dev` key on a new directory, then the listening address.
/// The rest of stdout is drained in the background so the child never blocks on a full pipe.
async fn read_banner(
    stdout: tokio::process::ChildStdout,
) -> anyhow::Result<(String, Option<String>)> {
    let mut lines = BufReader::new(stdout).lines();
    let mut key = None;
    let mut key_next = false;
    while let Some(line) = lines.next_line().await? {
        if key_next {
            key = Some(line.trim().to_owned());
            key_next = false;
        } else if line.starts_with("Created tenant") {
            key_next = true;
        } else if let Some(rest) = line.strip_prefix("herald listening on ") {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((url, key));
        }
    }
    bail!("the server stopped before it listened")
}

/// Peak resident memory (VmHWM) of a `/proc/<pid>/status` file, in MB.
pub fn peak_rss_mb(status_file: &str) -> f64 {
    std::fs::read_to_string(status_file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(str::to_owned))
        })
        .and_then(|kb| kb.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
