//! The leak report (cargo feature `registry`): a program that loses two devices, one to a
//! reference cycle and one to a forgotten clone, and releases a third properly. The report
//! printed when `main` returns names the lines that took the references still held.
//!
//! ```sh
//! cargo run --features registry --example leaks
//! ```

use drmm::Device;

struct Gpu;

fn main() -> drmm::Result<()> {
    // First: dropped last, after everything else `main` owns.
    let _report = drmm::report::at_exit();

    // A reference cycle: the device owns a managed value that holds the device, so its last
    // reference never goes.
    let card0 = Device::with_name("card0", Gpu);
    let _scanout = card0.kzalloc(4096)?;
    let _cycle = card0.alloc(card0.clone())?;

    // A forgotten clone: the device is unplugged and closed, but a reference was stashed.
    let card1 = Device::with_name("card1", Gpu);
    card1.register()?;
    let file = card1.open(())?;
    std::mem::forget(card1.clone());
    drop(file);
    card1.unplug();

    // Done right: released when its last reference goes, so not reported.
    let card2 = Device::with_name("card2", Gpu);
    let _ = drmm::add_action!(card2, |_| ())?;
    let client = card2.clone();
    drop(client);

    println!("main returns; the report follows on standard error");
    Ok(())
}
