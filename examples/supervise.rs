//! Supervises a flaky program for a few seconds and prints every event as a JSON line.
//!
//! `cargo run --example supervise`

use std::time::Duration;

use processcontrol::{
    BackoffPolicy, BreakerPolicy, Cooldown, Echo, ProcessSpec, StateName, Supervisor,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = ProcessSpec::new("flaky", ["sh", "-c", "echo working; sleep 0.5; exit 1"])
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(200),
            ..BackoffPolicy::default()
        })
        .breaker(BreakerPolicy {
            max_restarts: 3,
            window: Duration::from_secs(60),
            cooldown: Cooldown::Never,
            max_cooldown: Duration::from_secs(60),
        });
    spec.logs.echo = Echo::Prefixed;
    let flaky = Supervisor::spawn(spec)?;
    let mut events = flaky.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("{}", event.to_json_line());
        }
    });
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        flaky.wait_for(|s| s.state == StateName::BreakerOpen),
    )
    .await??;
    println!("gave up after {} restarts", status.restarts);
    flaky.shutdown().await;
    printer.abort();
    Ok(())
}
