//! The log's view of a disk: one directory of named files, behind a trait.
//!
//! The write-ahead log ([`crate::wal`]) does all its I/O through [`Disk`], so the same
//! replay code (torn tail or corruption?) runs on real files ([`FsDisk`]) and in the
//! simulator ([`SimDisk`]), where a crash drops what was never synced, the last write can
//! tear, any stored byte can flip and an fsync can fail.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One directory of files, as the log uses it.
pub trait Disk: Send + 'static {
    /// The names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A whole file, or `None` if there is none by that name.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Appends to a file (created if missing); not durable until [`Disk::sync`].
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Makes a file's appended bytes durable (`fdatasync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Cuts a file to `len` bytes, durably.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes a file, durably.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Replaces a file's whole content atomically and durably (write, fsync, rename).
    fn replace(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
}

/// A real directory.
#[derive(Debug)]
pub struct FsDisk {
    dir: PathBuf,
    open: HashMap<String, File>,
}

impl FsDisk {
    /// Opens (creating) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<FsDisk> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(FsDisk { dir, open: HashMap::new() })
    }

    fn file(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let path = self.dir.join(name);
            let existed = path.exists();
            let f = OpenOptions::new().create(true).append(true).open(&path)?;
            if !existed {
                self.sync_dir()?;
            }
            self.open.insert(name.to_owned(), f);
        }
        Ok(self.open.get_mut(name).expect("just opened"))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Disk for FsDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.file(name)?.write_all(data)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        let f = self.file(name)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.sync_dir()
    }

    fn replace(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.open.remove(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join(name))?;
        self.sync_dir()
    }
}

/// A simulated file: what the page cache holds and what the platter holds.
#[derive(Debug, Clone, Default)]
struct SimFile {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// The byte range a failed fsync dropped: visible until a crash, and a later fsync that
    /// succeeds does not write it (Linux marks such pages clean: "fsyncgate").
    lost: Option<(usize, usize)>,
}

/// Faults a simulated disk has been told to inject.
#[derive(Debug, Clone, Default)]
struct Armed {
    fail_syncs: u32,
    fail_appends: u32,
}

/// The state of a simulated directory, shared between the log and the simulator.
#[derive(Debug, Default)]
pub struct SimFs {
    files: BTreeMap<String, SimFile>,
    armed: Armed,
}

/// An in-memory directory that models a real disk's failures; clones share the files.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    fs: Arc<Mutex<SimFs>>,
}

/// How a crash treats the unsynced tail of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashTail {
    /// Every unsynced byte is lost.
    Drop,
    /// The first `n` unsynced bytes of each file reached the disk (a torn write).
    Keep(usize),
}

impl SimDisk {
    /// An empty directory.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimFs) -> T) -> T {
        f(&mut self.fs.lock().expect("sim disk lock"))
    }

    /// A crash: each file keeps its durable bytes (plus a torn prefix of the rest).
    pub fn crash(&self, tail: CrashTail) {
        self.with(|fs| {
            for file in fs.files.values_mut() {
                let mut kept = file.durable.clone();
                if let CrashTail::Keep(n) = tail {
                    let synced = kept.len().min(file.cache.len());
                    let end = (synced + n).min(file.cache.len()).min(file.lost.map_or(usize::MAX, |l| l.0));
                    if end > synced {
                        kept.truncate(synced);
                        kept.extend_from_slice(&file.cache[synced..end]);
                    }
                }
                file.cache = kept.clone();
                file.durable = kept;
                file.lost = None;
            }
            fs.armed = Armed::default();
        })
    }

    /// Flips one bit of a durable byte: `at` picks the byte among all files' durable
    /// bytes (modulo their total). Returns the file and offset, if there was any byte.
    pub fn flip(&self, at: u64, bit: u8) -> Option<(String, usize)> {
        self.with(|fs| {
            let total: usize = fs.files.values().map(|f| f.durable.len()).sum();
            if total == 0 {
                return None;
            }
            let mut at = (at % total as u64) as usize;
            for (name, file) in fs.files.iter_mut() {
                if at < file.durable.len() {
                    file.durable[at] ^= 1 << (bit % 8);
                    if at < file.cache.len() {
                        file.cache[at] ^= 1 << (bit % 8);
                    }
                    return Some((name.clone(), at));
                }
                at -= file.durable.len();
            }
            None
        })
    }

    /// Flips one bit of the stored byte `back` bytes before the end of the last file whose
    /// name ends with `suffix` (in name order) that holds that many; returns where.
    pub fn flip_tail(&self, suffix: &str, back: usize, bit: u8) -> Option<(String, usize)> {
        self.with(|fs| {
            let (name, file) =
                fs.files.iter_mut().rev().find(|(n, f)| n.ends_with(suffix) && f.durable.len() >= back.max(1))?;
            let at = file.durable.len() - back.max(1);
            file.durable[at] ^= 1 << (bit % 8);
            if at < file.cache.len() {
                file.cache[at] ^= 1 << (bit % 8);
            }
            Some((name.clone(), at))
        })
    }

    /// The next `n` fsyncs fail (and lose what they were to write).
    pub fn fail_syncs(&self, n: u32) {
        self.with(|fs| fs.armed.fail_syncs += n)
    }

    /// The next `n` appends fail (no space left).
    pub fn fail_appends(&self, n: u32) {
        self.with(|fs| fs.armed.fail_appends += n)
    }

    /// Injected failures not yet fired are called off.
    pub fn disarm(&self) {
        self.with(|fs| fs.armed = Armed::default())
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("simulated {what} failure"))
}

impl Disk for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.with(|fs| fs.files.keys().cloned().collect()))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.with(|fs| fs.files.get(name).map(|f| f.cache.clone())))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.with(|fs| {
            if fs.armed.fail_appends > 0 {
                fs.armed.fail_appends -= 1;
                return Err(injected("write"));
            }
            fs.files.entry(name.to_owned()).or_default().cache.extend_from_slice(data);
            Ok(())
        })
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        self.with(|fs| {
            let fail = fs.armed.fail_syncs > 0;
            let file = fs.files.entry(name.to_owned()).or_default();
            if fail {
                fs.armed.fail_syncs -= 1;
                let from = file.durable.len().min(file.cache.len());
                let to = file.cache.len();
                file.lost = Some(match file.lost {
                    Some((a, b)) => (a.min(from), b.max(to)),
                    None => (from, to),
                });
                return Err(injected("fsync"));
            }
            let mut durable = file.cache.clone();
            if let Some((from, to)) = file.lost {
                // Bytes a failed fsync dropped are not written now either: they read back
                // as a hole once the page cache is gone.
                let to = to.min(durable.len());
                if from < to {
                    durable[from..to].fill(0);
                }
            }
            file.durable = durable;
            Ok(())
        })
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.with(|fs| {
            let file = fs.files.entry(name.to_owned()).or_default();
            let len = len as usize;
            file.cache.truncate(len);
            file.durable.truncate(len);
            if file.lost.is_some_and(|(from, _)| from >= len) {
                file.lost = None;
            }
            Ok(())
        })
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.with(|fs| fs.files.remove(name));
        Ok(())
    }

    fn replace(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.with(|fs| {
            let file = SimFile { cache: data.to_vec(), durable: data.to_vec(), lost: None };
            fs.files.insert(name.to_owned(), file);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_only_synced_bytes_or_a_torn_prefix() {
        let mut d = SimDisk::new();
        d.append("a", b"hello").unwrap();
        d.sync("a").unwrap();
        d.append("a", b" world").unwrap();
        d.crash(CrashTail::Drop);
        assert_eq!(d.read("a").unwrap().unwrap(), b"hello");
        d.append("a", b" world").unwrap();
        d.crash(CrashTail::Keep(3));
        assert_eq!(d.read("a").unwrap().unwrap(), b"hello wo");
    }

    #[test]
    fn bytes_a_failed_fsync_dropped_never_reach_the_disk() {
        let mut d = SimDisk::new();
        d.append("a", b"abc").unwrap();
        d.sync("a").unwrap();
        d.append("a", b"def").unwrap();
        d.fail_syncs(1);
        assert!(d.sync("a").is_err());
        assert_eq!(d.read("a").unwrap().unwrap(), b"abcdef", "still in the page cache");
        d.append("a", b"ghi").unwrap();
        d.sync("a").unwrap();
        d.crash(CrashTail::Drop);
        assert_eq!(d.read("a").unwrap().unwrap(), b"abc\0\0\0ghi", "fsyncgate: the lost pages read back as holes");
    }

    #[test]
    fn a_flip_changes_one_durable_bit() {
        let mut d = SimDisk::new();
        d.append("a", &[0u8; 4]).unwrap();
        d.sync("a").unwrap();
        assert_eq!(d.flip(6, 0), Some(("a".into(), 2)));
        assert_eq!(d.read("a").unwrap().unwrap(), [0, 0, 1, 0]);
    }
}
