//! Quick A/B timing on a noisy machine, for W1/W2/W3: blocks of rounds of one variant (floor,
//! then drmm, then floor, then drmm: as criterion runs one id after another), the first round
//! of each block a warm-up (it pays for the other variant's leftovers in the allocator, e.g.
//! the floor's fast bins consolidated by drmm's first chunk allocation). Reports min and
//! median ns per element of each and the ratios.
//! usage: ab <w1|w2|w3> [n] [rounds per variant]
use std::hint::black_box;
use std::time::Instant;

fn shuffled(n: usize) -> Vec<usize> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
    v
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let w = args[1].as_str();
    let n: usize = args.get(2).map_or(1_000_000, |s| s.parse().unwrap());
    let reps: usize = args.get(3).map_or(16, |s| s.parse().unwrap());
    let mut boxes: Vec<Box<[u8; 64]>> = Vec::with_capacity(n);
    let mut closures: Vec<Box<dyn FnOnce()>> = Vec::with_capacity(n);
    let order = shuffled(n);
    let (mut f, mut d) = (Vec::new(), Vec::new());
    for block in 0..4 {
        let floor = block % 2 == 0;
        for r in 0..=reps / 2 {
            let ns = match (w, floor) {
                ("w1", true) => {
                    let t = Instant::now();
                    for _ in 0..n {
                        boxes.push(Box::new([0; 64]));
                    }
                    black_box(&mut boxes);
                    boxes.clear();
                    t.elapsed()
                }
                ("w1", false) => {
                    let dev = drmm::Device::new(());
                    let t = Instant::now();
                    for _ in 0..n {
                        let _ = black_box(dev.kzalloc(64).unwrap());
                    }
                    drop(dev);
                    t.elapsed()
                }
                ("w2", true) => {
                    let t = Instant::now();
                    for i in 0..n {
                        closures.push(Box::new(move || {
                            black_box(i);
                        }));
                    }
                    while let Some(c) = closures.pop() {
                        c();
                    }
                    t.elapsed()
                }
                ("w2", false) => {
                    let dev = drmm::Device::new(());
                    let t = Instant::now();
                    for i in 0..n {
                        let _ = dev
                            .add_action_named("word_action", move |_| {
                                black_box(i);
                            })
                            .unwrap();
                    }
                    drop(dev);
                    t.elapsed()
                }
                ("w3", true) => {
                    let mut hs: Vec<Option<Box<[u8; 64]>>> =
                        (0..n).map(|_| Some(Box::new([0u8; 64]))).collect();
                    let v: Vec<Box<[u8; 64]>> =
                        order.iter().map(|&i| hs[i].take().unwrap()).collect();
                    let t = Instant::now();
                    for b in v {
                        drop(black_box(b));
                    }
                    t.elapsed()
                }
                ("w3", false) => {
                    let dev = drmm::Device::new(());
                    let mut hs: Vec<Option<drmm::Managed<[u8]>>> =
                        (0..n).map(|_| Some(dev.kzalloc(64).unwrap())).collect();
                    let v: Vec<drmm::Managed<[u8]>> =
                        order.iter().map(|&i| hs[i].take().unwrap()).collect();
                    let t = Instant::now();
                    for h in v {
                        dev.kfree(h).unwrap();
                    }
                    let e = t.elapsed();
                    drop(dev);
                    e
                }
                _ => panic!("unknown workload"),
            };
            if r > 0 {
                let per = ns.as_nanos() as f64 / n as f64;
                if floor { f.push(per) } else { d.push(per) }
            }
        }
    }
    let (fm, fmed) = stats(f);
    let (dm, dmed) = stats(d);
    println!(
        "{w} n={n}: floor min {fm:.2} med {fmed:.2} | drmm min {dm:.2} med {dmed:.2} | ratio min {:.2} med {:.2}",
        dm / fm,
        dmed / fmed
    );
}
