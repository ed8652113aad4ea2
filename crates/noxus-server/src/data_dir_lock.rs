//! One data directory, one process. SQLite serves one process well; two
//! `noxus serve` on one data directory would each keep their own key cache,
//! rate limits and usage buffer, so a revocation through one would not be
//! seen by the other until its cache expired. The second one is refused at
//! start, naming the process that holds the directory. Several processes
//! share a PostgreSQL database instead (`--database-url`).
//!
//! The lock is an exclusive advisory lock (`flock`) on `noxus.lock` in the
//! data directory, held for the life of the process: the operating system
//! releases it when the process ends, however it ends, so a crash never
//! leaves a stale lock behind. The file holds the holder's process id, for
//! the error message only.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The name of the lock file in the data directory.
pub const LOCK_FILE: &str = "noxus.lock";

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the data directory for this process (creating it if needed),
    /// or says which process holds it.
    pub fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display())
        })?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another noxus process (pid {holder})")
                };
                anyhow::bail!(
                    "the data directory {} is in use by {who}: one data directory serves one process. Stop that process first, or, to run several processes, run them all on PostgreSQL (--database-url / NOXUS_DATABASE_URL)",
                    data_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("cannot lock {}: {e}", path.display());
            }
        }
        // Ours now: say who holds it.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(Self { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // release immediate even if the descriptor was shared.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let refused = DataDirLock::acquire(dir.path()).expect_err("second");
        let text = refused.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("PostgreSQL"), "{text}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again");
    }
}
