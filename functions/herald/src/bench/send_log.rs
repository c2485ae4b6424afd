//! The sandbox's send log, read as it grows: one line per hand-off to the gateway
//! (`micros \t message id \t attempt \t priority`), written by the server under test.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use shared::domain::MessageId;

pub struct SendLog {
    path: PathBuf,
    /// Opened once the server has written its first line; read on from where it stopped.
    file: Option<std::fs::File>,
    partial: Vec<u8>,
    /// Hand-offs read so far.
    pub lines: usize,
}

impl SendLog {
    pub fn new(data_dir: &std::path::Path) -> SendLog {
        SendLog {
            path: data_dir.join(shared::embedded::SANDBOX_SEND_LOG),
            file: None,
            partial: Vec::new(),
            lines: 0,
        }
    }

    /// Reads what was appended since the last call; `watch` collects the hand-off times
    /// (micros) of the ids it holds.
    pub fn read_new(&mut self, watch: &mut HashMap<MessageId, Option<i64>>) -> anyhow::Result<()> {
        if self.file.is_none() {
            match std::fs::File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(file) = &mut self.file {
            file.read_to_end(&mut self.partial)?;
        }
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.lines += 1;
            if watch.is_empty() {
                continue;
            }
            let mut fields = line.split(|b| *b == b'\t');
            let (Some(at), Some(id)) = (fields.next(), fields.next()) else {
                continue;
            };
            let id = std::str::from_utf8(id).ok().and_then(MessageId::parse);
            if let Some(slot) = id.and_then(|id| watch.get_mut(&id)) {
                *slot = std::str::from_utf8(at).ok().and_then(|a| a.parse().ok());
            }
        }
        Ok(())
    }
}
