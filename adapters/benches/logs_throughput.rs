//! Lines per second through a log ring and through a capture (pipe to ring, with and without
//! a log file behind it). `cargo bench -p processcontrol-adapters --bench logs_throughput`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use processcontrol_adapters::logs::{
    spawn_file_writer, Capture, FileConfig, LogLine, LogRing, Stream,
};
use tokio::io::AsyncWriteExt;

fn main() {
    const LINES: u32 = 2_000_000;
    let ring = LogRing::default();
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("{i:04} a typical log line of some length"))
        .collect();
    let started = Instant::now();
    for i in 0..LINES {
        ring.push(LogLine {
            time: SystemTime::now(),
            stream: Stream::Stdout,
            instance: 1,
            text: texts[i as usize % 1000].clone(),
        });
    }
    let elapsed = started.elapsed();
    println!(
        "ring.push: {LINES} lines in {elapsed:?} = {:.2} M lines/s",
        f64::from(LINES) / elapsed.as_secs_f64() / 1e6
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ring = Arc::new(LogRing::default());
        let mut input = Vec::new();
        for i in 0..LINES {
            input.extend_from_slice(texts[i as usize % 1000].as_bytes());
            input.push(b'\n');
        }
        let bytes = input.len();
        let (mut child, pipe) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            child.write_all(&input).await?;
            child.shutdown().await
        });
        let started = Instant::now();
        let report = Capture::new(ring, Stream::Stdout, 1).run(pipe).await;
        let elapsed = started.elapsed();
        writer.await.expect("no panic").expect("writes");
        assert_eq!(report.lines, u64::from(LINES));
        println!(
            "capture (duplex pipe -> ring): {LINES} lines, {bytes} B in {elapsed:?} = {:.2} M lines/s, {:.0} MB/s",
            f64::from(LINES) / elapsed.as_secs_f64() / 1e6,
            bytes as f64 / elapsed.as_secs_f64() / 1e6
        );

        // Same flood with a log file behind it: capture speed is unchanged, the writer
        // keeps what it can and counts the rest.
        let dir = std::env::temp_dir().join(format!("pc-logs-measure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (sink, file_writer) =
            spawn_file_writer(FileConfig::new(&dir, "bench")).expect("valid config");
        let mut input = Vec::new();
        for i in 0..LINES {
            input.extend_from_slice(texts[i as usize % 1000].as_bytes());
            input.push(b'\n');
        }
        let (mut child, pipe) = tokio::io::duplex(64 << 10);
        let writer = tokio::spawn(async move {
            child.write_all(&input).await?;
            child.shutdown().await
        });
        let started = Instant::now();
        let ring = Arc::new(LogRing::default());
        let report = Capture::new(ring, Stream::Stdout, 1)
            .with_file(sink)
            .run(pipe)
            .await;
        let elapsed = started.elapsed();
        writer.await.expect("no panic").expect("writes");
        let status = file_writer.finish().await.expect("writer ok");
        println!(
            "capture with file: {LINES} lines in {elapsed:?} = {:.2} M lines/s; file got {} lines, {} dropped, {} rotations",
            f64::from(LINES) / elapsed.as_secs_f64() / 1e6,
            status.written_lines,
            status.dropped_lines(),
            status.rotations
        );
        assert_eq!(report.lines, u64::from(LINES));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
