//! `herald bench` runs end to end on small numbers and prints every figure it promises.

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
            "--drain",
            "10000",
            "--backlog",
            "10000",
            "--probes",
            "10",
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
        "peak RSS",
    ] {
        assert!(
            stdout.contains(figure),
            "bench output lacks {figure:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("not handed over"),
        "every probe must reach the gateway:\n{stdout}"
    );
}
