//! `noxus keys scan`: finds Noxus keys in files and directories, offline.
//!
//! A candidate is what [`KEY_REGEX`] matches (`noxus_` and 38 base62
//! characters between word boundaries); it is a key only when its checksum
//! is right ([`check_key_format`]), so a look-alike (a typo, a truncated
//! copy, a made-up example) is never reported. What is found is printed as
//! `file:line: noxus_Ab3d…x9Zq` (the key's display fragments, never the
//! key), and the exit code says whether anything was found (for pre-commit
//! hooks and CI). With `--report`, the keys found are sent to the
//! platform's leak-report endpoint (no key needed), which revokes each one
//! that still works.
//!
//! The walk skips `.git`, `target` and `node_modules` directories, files
//! larger than `--max-file-bytes`, binary files (a NUL byte in their first
//! 8 KiB) and symbolic links inside a directory (what a link points to
//! inside the tree is scanned where it is; outside it, not at all). A path
//! named on the command line is scanned even if it is a link or one of the
//! skipped directories.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Args;
use noxus_api::key_format::{check_key_format, display_prefix, display_suffix, masked, KEY_REGEX};
use noxus_api::{ErrorBody, LeakCandidate, LeakReport};
use regex::bytes::Regex;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::connection::{Backend, ConnectionArgs};
use crate::exit::{self, Failure};
use crate::output::Output;

/// Files larger than this are skipped unless `--max-file-bytes` says otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// Directories the walk does not enter: version control, build output,
/// dependencies (large, and not the project's own text).
pub const SKIPPED_DIRS: &[&str] = &[".git", "target", "node_modules"];

/// A file with a NUL byte in this many first bytes is binary (as git and
/// ripgrep decide).
const BINARY_SNIFF_BYTES: usize = 8192;

/// What found the keys, as the report says.
const SOURCE: &str = "noxus keys scan";

/// Tries of one report when the platform says to wait (429, 503).
const REPORT_ATTEMPTS: u32 = 3;

/// Longest wait between two tries, whatever `Retry-After` says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Options of `keys scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and directories to scan [default: the current directory].
    paths: Vec<PathBuf>,
    /// Send the keys found to the platform's leak-report endpoint (no key
    /// needed): each one that still works is revoked at once, and its
    /// workspace is told where it was found.
    #[arg(long)]
    report: bool,
    /// With --report: where the keys were found (the repository's or the
    /// page's URL), sent with each key.
    #[arg(long, requires = "report", value_name = "URL")]
    url: Option<String>,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FILE_BYTES, value_name = "BYTES")]
    max_file_bytes: u64,
}

/// A key found: where, and its display fragments. `Debug` never shows the key.
#[derive(Debug, Serialize)]
struct Finding {
    /// The file, as reached from the path given.
    path: String,
    /// 1-based line.
    line: u64,
    /// `noxus_Ab3d…x9Zq`.
    fragment: String,
    /// The key itself, only for `--report`.
    #[serde(skip)]
    key: SecretString,
}

/// What the walk saw.
#[derive(Debug, Default, Serialize)]
struct Skipped {
    /// Files with a NUL byte near their start.
    binary: u64,
    /// Files over `--max-file-bytes`.
    too_large: u64,
    /// Files that could not be read (a warning names each).
    unreadable: u64,
    /// Symbolic links met inside directories.
    symlinks: u64,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    findings: Vec<Finding>,
    /// Distinct keys among the findings.
    keys_found: usize,
    files_scanned: u64,
    skipped: Skipped,
    /// Whether the keys were sent to the platform.
    reported: bool,
}

/// The candidate pattern, compiled once. ASCII word boundaries, as Go's
/// RE2 (gitleaks) and most scanners read `\b`, on bytes: a file need not
/// be UTF-8.
fn pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(&format!("(?-u){KEY_REGEX}"))
            .unwrap_or_else(|e| unreachable!("KEY_REGEX compiles: {e}"))
    })
}

/// The keys in `text`: (1-based line, key), in order. Look-alikes with a
/// wrong checksum are not keys.
fn keys_in(text: &[u8]) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    let mut line = 1u64;
    let mut counted_to = 0;
    for candidate in pattern().find_iter(text) {
        let Ok(key) = std::str::from_utf8(candidate.as_bytes()) else {
            continue;
        };
        if check_key_format(key).is_err() {
            continue;
        }
        line += text[counted_to..candidate.start()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        counted_to = candidate.start();
        found.push((line, key.to_owned()));
    }
    found
}

/// A path as it can be printed on a terminal: control characters escaped.
fn printable(path: &Path) -> String {
    let text = path.to_string_lossy();
    if !text.chars().any(char::is_control) {
        return text.into_owned();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

struct Scanner<'a> {
    max_file_bytes: u64,
    summary: Summary,
    out: &'a Output,
}

impl Scanner<'_> {
    /// Scans a path named on the command line (followed if it is a link).
    fn scan_root(&mut self, root: &Path) -> Result<(), Failure> {
        let meta = std::fs::metadata(root).map_err(|e| {
            Failure::config(anyhow::anyhow!("cannot read {}: {e}", printable(root)))
        })?;
        if meta.is_dir() {
            self.scan_dir(root);
        } else {
            self.scan_file(root, meta.len());
        }
        Ok(())
    }

    /// Walks a directory, entries in name order (files of a directory
    /// before its subdirectories), with a stack instead of recursion so
    /// that no depth overflows it.
    fn scan_dir(&mut self, root: &Path) {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) => {
                    self.unreadable(&dir, &e);
                    continue;
                }
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(std::fs::DirEntry::file_name);
            let mut subdirs = Vec::new();
            for entry in entries {
                // The entry itself, not what a link points to.
                let Ok(kind) = entry.file_type() else {
                    self.unreadable(&entry.path(), &std::io::Error::other("unknown file type"));
                    continue;
                };
                if kind.is_symlink() {
                    self.summary.skipped.symlinks += 1;
                } else if kind.is_dir() {
                    let name = entry.file_name();
                    if !SKIPPED_DIRS.iter().any(|skip| name == *skip) {
                        subdirs.push(entry.path());
                    }
                } else if kind.is_file() {
                    let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    self.scan_file(&entry.path(), len);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }

    fn scan_file(&mut self, path: &Path, len: u64) {
        if len > self.max_file_bytes {
            self.summary.skipped.too_large += 1;
            return;
        }
        let mut text = Vec::new();
        // Read at most the cap (the file may have grown since).
        let read = File::open(path).and_then(|file| {
            file.take(self.max_file_bytes.saturating_add(1))
                .read_to_end(&mut text)
        });
        if let Err(e) = read {
            self.unreadable(path, &e);
            return;
        }
        if text.len() as u64 > self.max_file_bytes {
            self.summary.skipped.too_large += 1;
            return;
        }
        if text[..text.len().min(BINARY_SNIFF_BYTES)].contains(&0) {
            self.summary.skipped.binary += 1;
            return;
        }
        self.summary.files_scanned += 1;
        for (line, key) in keys_in(&text) {
            self.summary.findings.push(Finding {
                path: printable(path),
                line,
                fragment: masked(display_prefix(&key), display_suffix(&key)),
                key: SecretString::from(key),
            });
        }
    }

    fn unreadable(&mut self, path: &Path, e: &std::io::Error) {
        self.summary.skipped.unreadable += 1;
        self.out.warn(&format!(
            "cannot read {} ({e}): not scanned",
            printable(path)
        ));
    }
}

/// Runs `keys scan`: exit 0 when no key was found, 9 when one was
/// (reported or not), another code when the scan or the report failed.
pub fn run(out: &Output, connection: &ConnectionArgs, args: &ScanArgs) -> Result<(), Failure> {
    // Resolved first: a bad URL fails before any work.
    let backend = args.report.then(|| connection.backend()).transpose()?;
    if let Some(url) = &args.url {
        if !noxus_api::limits::is_valid_leak_text(url, noxus_api::limits::LEAK_URL_MAX_CHARS) {
            return Err(Failure::config(anyhow::anyhow!(
                "--url must be 1 to {} characters, without control characters",
                noxus_api::limits::LEAK_URL_MAX_CHARS
            )));
        }
    }
    let started = Instant::now();
    let mut scanner = Scanner {
        max_file_bytes: args.max_file_bytes,
        summary: Summary::default(),
        out,
    };
    let default = [PathBuf::from(".")];
    let roots = if args.paths.is_empty() {
        &default[..]
    } else {
        &args.paths[..]
    };
    for root in roots {
        scanner.scan_root(root)?;
    }
    let mut summary = scanner.summary;
    let mut distinct = HashSet::new();
    let candidates: Vec<LeakCandidate> = summary
        .findings
        .iter()
        .filter(|f| distinct.insert(f.key.expose_secret().to_owned()))
        .map(|f| {
            let candidate = LeakCandidate::new(f.key.expose_secret()).source(SOURCE);
            match &args.url {
                Some(url) => candidate.url(url),
                None => candidate,
            }
        })
        .collect();
    summary.keys_found = candidates.len();
    if !out.json {
        for finding in &summary.findings {
            out.line(&format!(
                "{}:{}: {}",
                finding.path, finding.line, finding.fragment
            ));
        }
        let took = started.elapsed().as_secs_f64();
        let scanned = match summary.files_scanned {
            1 => "1 file".to_owned(),
            n => format!("{n} files"),
        };
        match summary.keys_found {
            0 => out.error_hint(&format!(
                "no Noxus key found ({scanned} scanned in {took:.2} s)"
            )),
            n => out.warn(&format!(
                "{n} Noxus key{} found ({scanned} scanned in {took:.2} s): revoke {} and remove {} from the files (and their history)",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" },
                if n == 1 { "it" } else { "them" },
            )),
        }
    }
    let mut failure = None;
    if let (Some(backend), false) = (&backend, candidates.is_empty()) {
        match report(backend, candidates, out) {
            Ok(()) => summary.reported = true,
            Err(err) => failure = Some(err),
        }
    }
    if out.json {
        out.print_json(&summary);
    }
    if let Some(failure) = failure {
        return Err(failure);
    }
    if summary.keys_found > 0 {
        return Err(Failure::silent(exit::KEYS_FOUND));
    }
    Ok(())
}

/// Sends the keys to `POST /v1/keys/leaks`, at most 100 per report.
fn report(backend: &Backend, candidates: Vec<LeakCandidate>, out: &Output) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::other(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    let count = candidates.len();
    runtime.block_on(async {
        let client = noxus_sdk::reqwest::Client::builder()
            .timeout(backend.timeout)
            .user_agent(concat!("noxus-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::other(anyhow::anyhow!("cannot build the HTTP client: {e}")))?;
        let url = format!("{}/v1/keys/leaks", backend.url);
        for batch in candidates.chunks(noxus_api::limits::LEAK_CANDIDATES_MAX) {
            send(&client, &url, &LeakReport::new(batch.to_vec())).await?;
        }
        Ok::<(), Failure>(())
    })?;
    if !out.json {
        out.success(&format!(
            "reported {count} key{} to {}: each that still works is revoked within seconds",
            if count == 1 { "" } else { "s" },
            backend.url
        ));
    }
    Ok(())
}

/// One report, tried again (at most [`REPORT_ATTEMPTS`] times) when the
/// platform says to wait.
async fn send(
    client: &noxus_sdk::reqwest::Client,
    url: &str,
    report: &LeakReport,
) -> Result<(), Failure> {
    for attempt in 1..=REPORT_ATTEMPTS {
        let response = client.post(url).json(report).send().await.map_err(|e| {
            Failure::network(anyhow::anyhow!("cannot report the keys to {url}: {e}"))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let wait = header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs)
            .min(MAX_RETRY_WAIT);
        let request_id = header("x-request-id");
        let detail = match response.json::<ErrorBody>().await {
            Ok(body) => body.detail,
            Err(_) => status.to_string(),
        };
        let busy = status.as_u16() == 429 || status.as_u16() == 503;
        if busy && attempt < REPORT_ATTEMPTS {
            tokio::time::sleep(wait).await;
            continue;
        }
        return Err(Failure::answered(
            anyhow::anyhow!("the platform refused the report ({status}): {detail}"),
            request_id,
        ));
    }
    Err(Failure::other(anyhow::anyhow!(
        "the platform did not take the report after {REPORT_ATTEMPTS} tries"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> String {
        noxus_api::key_format::key_from_body(body)
    }

    #[test]
    fn keys_are_found_with_their_lines_and_look_alikes_are_not() {
        let real = key("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
        let mut look_alike = real.clone();
        look_alike.replace_range(40.., "zzzz");
        assert!(check_key_format(&look_alike).is_err());
        let text = format!(
            "first line\nNOXUS_API_KEY={real}\n{look_alike}\n\"{real}\", x{real}, {real}_\nend {real}"
        );
        let found = keys_in(text.as_bytes());
        let lines: Vec<u64> = found.iter().map(|(line, _)| *line).collect();
        // Glued to a word character on either side, it is not matched.
        assert_eq!(lines, vec![2, 4, 5]);
        assert!(found.iter().all(|(_, k)| *k == real));
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_hide_a_key() {
        let real = key("0123456789abcdefghijABCDEFGHIJkl");
        let mut text = vec![0xff, 0xfe, b'\n'];
        text.extend_from_slice(real.as_bytes());
        text.extend_from_slice(&[0xc3, b'\n']);
        assert_eq!(keys_in(&text), vec![(2, real)]);
    }

    #[test]
    fn printed_paths_cannot_drive_the_terminal() {
        assert_eq!(printable(Path::new("a/b.env")), "a/b.env");
        assert_eq!(printable(Path::new("a\u{1b}[2J.env")), "a\\u{1b}[2J.env");
    }
}
