//! Instruction counts per element: run under callgrind (see run.sh), subtract.
//! usage: icount <w1|w1floor|w2|w2floor|w3|w3floor> <n> [rounds]
use std::hint::black_box;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[2].parse().unwrap();
    let rounds: usize = args.get(3).map_or(1, |r| r.parse().unwrap());
    // One Vec for all rounds, as in benches/workloads.rs.
    let mut boxes: Vec<Box<[u8; 64]>> = Vec::with_capacity(n);
    let mut closures: Vec<Box<dyn FnOnce()>> = Vec::with_capacity(n);
    for _ in 0..rounds {
        one(&args[1], n, &mut boxes, &mut closures);
    }
}

fn one(w: &str, n: usize, boxes: &mut Vec<Box<[u8; 64]>>, v: &mut Vec<Box<dyn FnOnce()>>) {
    match w {
        "w1" => {
            let dev = drmm::Device::new(());
            for _ in 0..n {
                let _ = black_box(dev.kzalloc(64).unwrap());
            }
            drop(dev);
        }
        "w1floor" => {
            for _ in 0..n {
                boxes.push(Box::new([0; 64]));
            }
            black_box(&mut *boxes);
            boxes.clear();
        }
        "w2" => {
            let dev = drmm::Device::new(());
            for i in 0..n {
                let _ = dev
                    .add_action_named("word_action", move |_| {
                        black_box(i);
                    })
                    .unwrap();
            }
            drop(dev);
        }
        "w2floor" => {
            for i in 0..n {
                v.push(Box::new(move || {
                    black_box(i);
                }));
            }
            while let Some(f) = v.pop() {
                f();
            }
        }
        "w3" => {
            // allocations + random-order frees (the frees are the element)
            let order = shuffled(n);
            let dev = drmm::Device::new(());
            let mut hs: Vec<Option<drmm::Managed<[u8]>>> =
                (0..n).map(|_| Some(dev.kzalloc(64).unwrap())).collect();
            for &i in &order {
                dev.kfree(hs[i].take().unwrap()).unwrap();
            }
            drop(dev);
        }
        "w3floor" => {
            let order = shuffled(n);
            let mut hs: Vec<Option<Box<[u8; 64]>>> =
                (0..n).map(|_| Some(Box::new([0u8; 64]))).collect();
            for &i in &order {
                drop(black_box(hs[i].take().unwrap()));
            }
        }
        // W4 (one element = one device).
        "w4" => {
            for _ in 0..n {
                let dev = drmm::Device::new(());
                for _ in 0..16 {
                    let _ = black_box(dev.kzalloc(64).unwrap());
                }
                drop(dev);
            }
        }
        "w4floor" => {
            for _ in 0..n {
                let b: [Box<[u8; 64]>; 16] = std::array::from_fn(|_| Box::new([0; 64]));
                drop(black_box(b));
            }
        }
        w => panic!("unknown workload {w}"),
    }
}
