//! `idle`: a worker that sleeps, an hour at a time, and never exits: what
//! an idle service costs the host when its code is small. The density
//! benchmark (`scripts/bench-density.py`) runs 100,000 of it in one daemon;
//! `app sleep` is the same with a larger component.

use std::time::Duration;

fn main() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
