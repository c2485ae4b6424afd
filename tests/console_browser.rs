//! The console in a real headless browser: `tests/console_browser.py` drives Debian's
//! chromium with Playwright through the scenarios a person follows, screenshots each page
//! (`target/console-screenshots/`) and runs axe-core's accessibility check on every page.
//! `scripts/test.sh` installs what it needs (`scripts/python-tools.sh`, `scripts/browser-tools.sh`).

use std::path::{Path, PathBuf};

use herald_tests::TestServer;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A tool the test needs, or a failure that says how to get it.
fn required(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let root = workspace();
    let python = required(
        root.join(".venv/bin/python"),
        "run ./scripts/python-tools.sh (Playwright for Python)",
    );
    let chromium = required(
        PathBuf::from(std::env::var("HERALD_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into())),
        "run ./scripts/browser-tools.sh (Debian's chromium), or set HERALD_TEST_CHROMIUM",
    );
    let axe = required(
        root.join("target/browser-tools/node_modules/axe-core/axe.min.js"),
        "run ./scripts/browser-tools.sh (axe-core from npm)",
    );
    let s = TestServer::start().await;
    let read_key = s.new_key_with("acme", "read").await;
    let shots = root.join("target/console-screenshots");
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/console_browser.py"))
        .env("HERALD_URL", &s.url)
        .env("HERALD_KEY", &s.key)
        .env("HERALD_READ_KEY", &read_key)
        .env("HERALD_AXE", axe)
        .env("HERALD_CHROMIUM", chromium)
        .env("HERALD_SCREENSHOTS", &shots)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for shot in [
        "01-sign-in",
        "02-overview",
        "04-message-delivered",
        "04b-overview-after-a-send",
        "07-signed-out",
        "20-phone-overview",
    ] {
        assert!(
            shots.join(format!("{shot}.png")).exists(),
            "no screenshot {shot}"
        );
    }
}
