//! How fast `noxus keys scan` walks a repository: generates a tree of
//! source-like files (with look-alikes and three real keys), runs the real
//! `noxus` binary on it several times, checks it found exactly the three
//! keys, and prints the median wall time, files and megabytes per second.
//!
//! ```sh
//! cargo build --release -p noxus-cli
//! cargo run --release -p noxus-bench --bin key_scan -- --noxus target/release/noxus
//! ```
//!
//! The files are read from the operating system's page cache (they were
//! just written): this measures the scanner, not the disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use noxus_api::key_format::{key_from_body, KEY_BODY_LEN};

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// The `noxus` binary to run.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,
    /// Files in the tree.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Lines per file (about 60 bytes each).
    #[arg(long, default_value_t = 50)]
    lines: usize,
    /// Timed runs (after one untimed).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// xorshift64*: a reproducible tree.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn base62(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..n)
            .map(|_| ALPHABET[(self.next() % 62) as usize] as char)
            .collect()
    }
}

fn generate(root: &Path, args: &Args) -> anyhow::Result<u64> {
    let mut random = Random(0x00c0_ffee);
    let mut bytes = 0u64;
    let keys_at = [args.files / 7, args.files / 2, args.files - 1];
    for i in 0..args.files {
        let dir = root.join(format!("module{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        let mut text = String::new();
        for line in 0..args.lines {
            let body = random.base62(KEY_BODY_LEN);
            match (line, i % 10) {
                // One look-alike in ten files: right prefix and length, wrong checksum.
                (3, 0) => text.push_str(&format!(
                    "    api_key = \"noxus_{body}{}\"\n",
                    random.base62(6)
                )),
                (5, _) if keys_at.contains(&i) => {
                    text.push_str(&format!("NOXUS_API_KEY={}\n", key_from_body(&body)));
                }
                _ => text.push_str(&format!(
                    "    let value_{line} = compute(\"{}\", {line}); // {}\n",
                    &body[..12],
                    &body[12..]
                )),
            }
        }
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("file{i:05}.rs")), text)?;
    }
    Ok(bytes)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let bytes = generate(dir.path(), &args)?;
    eprintln!(
        "generated {} files, {:.1} MB, in {:.1} s",
        args.files,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for round in 0..=args.rounds {
        let started = Instant::now();
        let out = Command::new(&args.noxus)
            .args(["keys", "scan", "--json"])
            .current_dir(dir.path())
            .output()?;
        let took = started.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            report["keys_found"] == 3 && report["files_scanned"] == args.files,
            "unexpected scan result: {report}"
        );
        if round > 0 {
            times.push(took);
            eprintln!("round {round}: {took:.3} s");
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "median {median:.3} s for {} files ({:.1} MB): {:.0} files/s, {:.0} MB/s",
        args.files,
        bytes as f64 / 1e6,
        args.files as f64 / median,
        bytes as f64 / 1e6 / median
    );
    Ok(())
}
