//! The seed's scenario, traced: a logical device outlives its driver binding because an open
//! file still holds it; its drmm resources are released in reverse order at the last close, and
//! the driver data is dropped after all of them.
//!
//! Run with `cargo run --example seed` (the trace is on by default; set `RUST_LOG` to change it).

use std::sync::Mutex;

use drmm::{Device, LogicalDevice};

/// The driver's private data (the container the kernel frees last).
struct VirtualGpu {
    frames: Mutex<u64>,
}

impl Drop for VirtualGpu {
    fn drop(&mut self) {
        let frames = self.frames.lock().unwrap();
        println!("  driver data dropped last (frames rendered: {frames})");
    }
}

fn cleanup_mode_config(_: &LogicalDevice<VirtualGpu>) {
    println!("  mode config cleaned up (registered first, released last)");
}

fn destroy_planes(dev: &LogicalDevice<VirtualGpu>) {
    let frames = dev.data().frames.lock().unwrap();
    println!("  planes destroyed; driver data still readable: {frames} frames");
}

fn destroy_crtc(_: &LogicalDevice<VirtualGpu>) {
    println!("  crtc destroyed (registered last, released first)");
}

fn main() -> Result<(), drmm::Error> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "drmm=debug".into());
    // Print each event as a kernel-style line made of its fields: `ADD card0 #1 name (n bytes)`.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
            |w, field, value| {
                let v = format!("{value:?}");
                let v = v.trim_matches('"');
                match field.name() {
                    "op" => write!(w, "{v}"),
                    "dev_name" | "name" | "detail" => write!(w, " {v}"),
                    "entry" => write!(w, " #{v}"),
                    "size" => write!(w, " ({v} bytes)"),
                    _ => Ok(()),
                }
            },
        ))
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();

    println!("probe: create card0 and register its drmm resources");
    let gpu = VirtualGpu {
        frames: Mutex::new(0),
    };
    let dev = Device::with_name("card0", gpu);
    let _ = drmm::add_action!(dev, cleanup_mode_config)?;
    let vram = dev.kzalloc(64 * 1024)?;
    let name = dev.kstrdup("virtual-gpu")?;
    let _ = drmm::add_action!(dev, destroy_planes)?;
    let scratch = dev.kmalloc(256)?;
    let _ = drmm::add_action!(dev, destroy_crtc)?;

    println!("\nlive resources, newest first:");
    for e in dev.snapshot() {
        println!("  {e}");
    }

    println!("\nuserspace opens the device and renders");
    let file = dev.clone(); // drm_dev_get
    *file.data().frames.lock().unwrap() += 60;
    let (vram_len, name) = (vram.get(&file)?.len(), name.get(&file)?);
    println!("  vram {vram_len} bytes, name {name:?}");
    file.kfree(scratch)?; // early free: O(1) through the handle

    println!("\nunbind: the driver lets go, but the open file keeps card0 alive");
    drop(dev);
    println!("  references left: {}", Device::ref_count(&file));

    println!("\nlast close: release in reverse order, driver data last");
    drop(file);
    Ok(())
}
