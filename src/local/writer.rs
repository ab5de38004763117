//! One writer per state file. `migrate`, `rollback` and `simulate --state` each hold an exclusive
//! OS lock (`flock`) on a file beside the state file, `<state>.lock`, for as long as they run; a
//! second one is refused before it reads Azure, naming the holder the first one wrote into the
//! lock file. Two engines on one file would each send the writes the other is sending.
//!
//! The kernel drops the lock when its process ends, however it ends (a SIGKILL included), so a
//! stale `.lock` file never blocks anybody; only its text (the last holder) stays behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

use super::error::StoreError;

/// The held lock of a state file; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
    path: PathBuf,
}

/// Where the lock of the state file `state` lives.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    state.with_file_name(name)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

impl WriterLock {
    /// Take the lock of the state file `state` for `command` (as the holder's description says
    /// it), or say who holds it.
    pub fn acquire(state: &Path, command: &str) -> Result<Self, StoreError> {
        let path = lock_path(state);
        let io = |source| StoreError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder's text is informative only: an unreadable one still refuses.
                let _ = file.take(4096).read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::InUse {
                    path: state.to_path_buf(),
                    holder: if holder.is_empty() {
                        "a process that has not said who it is".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let text = format!(
            "`{command}` (pid {} on {}) since {}\n",
            std::process::id(),
            host_name(),
            Timestamp::now()
        );
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_and_admitted_once_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("ama-writer-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.db");
        let first = WriterLock::acquire(&state, "migrate").unwrap();
        assert_eq!(first.path(), dir.join("state.db.lock"));
        let err = WriterLock::acquire(&state, "rollback").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::InUse { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("`migrate`"),
            "the holder is named: {text}"
        );
        assert!(text.contains("state.db"), "the state file is named: {text}");
        drop(first);
        let again = WriterLock::acquire(&state, "rollback").unwrap();
        let holder = std::fs::read_to_string(again.path()).unwrap();
        assert!(holder.starts_with("`rollback` (pid "), "{holder}");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lock_paths_sit_beside_the_state_file() {
        assert_eq!(
            lock_path(Path::new("/var/lib/x/state.db")),
            PathBuf::from("/var/lib/x/state.db.lock")
        );
        assert_eq!(lock_path(Path::new("state")), PathBuf::from("state.lock"));
    }
}
