//! The `drmm` command: demo scenario, trace report and lifetime timeline (work in progress).

fn main() {
    println!(
        "drmm-cli: the demo lands with a later issue; run `cargo run --example seed` meanwhile"
    );
}
