//! The `processcontrol` command.

fn main() {
    println!(
        "processcontrol {}\n\nUSAGE:\n    processcontrol run [OPTIONS] -- PROGRAM [ARGS]...\n",
        env!("CARGO_PKG_VERSION")
    );
}
