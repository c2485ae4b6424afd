//! `herald bench` runs end to end on small numbers (its server a `herald serve` child) and prints
//! every figure it promises, in words and as `name value` lines.

use herald_tests::herald_binary;

#[test]
fn bench_prints_every_figure() {
    let out = std::process::Command::new(herald_binary())
        .args([
            "bench",
            "--requests",
            "200",
            "--concurrency",
            "8",
            "--bulk-recipients",
            "10000",
            "--backlog",
            "10000",
            "--probes",
            "10",
            "--inbound",
            "2000",
        ])
        .env("HERALD_LOG", "warn")
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    for figure in [
        "req/s",
        "recipients/s",
        "messages/s",
        "P0 dwell",
        "P4 dwell",
        "P3 backlog drained during the probes",
        "inbound stored and threaded",
        "peak RSS",
    ] {
        assert!(
            stdout.contains(figure),
            "bench output lacks {figure:?}:\n{stdout}"
        );
    }
    // One `name value` line per figure, for scripts that compare runs.
    for name in [
        "single_send_req_per_s",
        "single_send_p99_ms",
        "bulk_accept_recipients_per_s",
        "drain_msgs_per_s",
        "p0_dwell_p99_ms",
        "p4_dwell_p99_ms",
        "inbound_msg_per_s",
        "inbound_p99_ms",
        "server_peak_rss_mb",
        "bench_peak_rss_mb",
    ] {
        let value = stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no `{name} <value>` line:\n{stdout}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("`{name}` is not a number: {value}"));
        assert!(value > 0.0, "`{name}` is {value}");
    }
    assert!(
        !stdout.contains("not handed over"),
        "every probe must reach the gateway:\n{stdout}"
    );
}
