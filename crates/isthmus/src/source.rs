//! The sources: the file source reads the configured files and folders (a file that fails to
//! parse keeps the resources it had before, so a typo never takes a route down), and the
//! Kubernetes source gives the API server's objects as the same resources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use isthmus_api::load::{FileError, LoadedFile, config_files, load_str, read_file};
use isthmus_api::{Diagnostic, Resource, ResourceKey, Severity};

#[derive(Default)]
pub struct Loaded {
    pub resources: Vec<std::sync::Arc<Resource>>,
    pub rejected: Vec<ResourceKey>,
    pub diagnostics: Vec<Diagnostic>,
    /// Paths that could not be read and files that do not parse (their diagnostics say why).
    pub failed: usize,
    /// Whether anything differs from the previous load: a file's text, a file added or
    /// removed, or a change in the Kubernetes source.
    pub changed: bool,
    /// How many files were read (the others were known unchanged by their metadata).
    pub files_read: usize,
}

pub struct FileSource {
    roots: Vec<PathBuf>,
    /// The last good parse of every file, with a digest of the text it came from.
    files: BTreeMap<PathBuf, Parsed>,
    /// The digest of every file read by the last load (0: could not be read), to tell whether
    /// anything changed.
    read: BTreeMap<PathBuf, u64>,
    /// How long before a read a file must have last changed for its metadata to vouch for
    /// its text ([`SETTLED`]; tests shorten it).
    settled: std::time::Duration,
}

#[derive(Clone)]
struct Parsed {
    digest: u64,
    loaded: LoadedFile,
    /// The file's metadata when that text was read, if it can vouch for the text.
    stamp: Option<Stamp>,
}

/// What a file's metadata says about its content, as `git` and `rsync` use it: a file whose
/// size, times and inode are all unchanged has not been written since.
///
/// Times have a coarse granularity, so a write within the same tick as the read before it
/// would leave them unchanged. As `git` does with "racily clean" entries, a stamp counts only
/// if the file had last changed well before it was read ([`SETTLED`]); otherwise the file is
/// read again next time.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: std::time::SystemTime,
    changed: (i64, i64),
    inode: (u64, u64),
}

/// How long before a read a file must have last changed for its stamp to vouch for its text.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            len: m.len(),
            modified: m.modified().ok()?,
            changed: (m.ctime(), m.ctime_nsec()),
            inode: (m.dev(), m.ino()),
        })
    }

    /// This stamp, if a read at `read_at` came at least `settled` after the file's last change.
    fn settled(
        self,
        read_at: std::time::SystemTime,
        settled: std::time::Duration,
    ) -> Option<Stamp> {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::new(
                u64::try_from(self.changed.0).ok()?,
                u32::try_from(self.changed.1).ok()?,
            );
        let last = self.modified.max(changed);
        (read_at.duration_since(last).ok()? >= settled).then_some(self)
    }
}

/// One file of a load: its text (or why it could not be read) and, once known, its parse.
struct Pending {
    path: PathBuf,
    text: Result<String, FileError>,
    digest: u64,
    parsed: Option<Result<LoadedFile, FileError>>,
    /// The file's stamp, taken before it was read, if it vouches for the text.
    stamp: Option<Stamp>,
    /// Whether the file was read (not known unchanged by its stamp).
    read: bool,
}

impl FileSource {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        FileSource {
            roots,
            files: BTreeMap::new(),
            read: BTreeMap::new(),
            settled: SETTLED,
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Reads every file again. Files whose text is unchanged keep their parse: with a large
    /// configuration, parsing is most of a reload's time, and an edit usually touches one file.
    /// Changed files are parsed in parallel.
    pub fn load(&mut self) -> Loaded {
        let mut out = Loaded::default();
        let mut pending = Vec::new();
        for root in &self.roots {
            match config_files(root) {
                Ok(files) => pending.extend(files.into_iter().map(|path| self.pending(path))),
                Err(e) => {
                    out.diagnostics
                        .push(file_diag(root, format!("cannot read: {e}")));
                    out.failed += 1;
                }
            }
        }
        out.files_read = pending.iter().filter(|p| p.read).count();
        let read: BTreeMap<PathBuf, u64> =
            pending.iter().map(|p| (p.path.clone(), p.digest)).collect();
        // The first load always counts as a change.
        out.changed = read != self.read || self.files.is_empty() && self.read.is_empty();
        self.read = read;
        parse_in_parallel(&mut pending);
        let mut seen = BTreeMap::new();
        for p in pending {
            let parsed = match p.parsed {
                Some(Ok(l)) => Parsed {
                    digest: p.digest,
                    loaded: l,
                    stamp: p.stamp,
                },
                Some(Err(e)) => {
                    out.diagnostics.push(e.0);
                    out.failed += 1;
                    let Some(prev) = self.files.get(&p.path) else {
                        continue;
                    };
                    out.diagnostics.push(Diagnostic {
                        severity: Severity::Note,
                        message: format!(
                            "the file does not parse; its previous {} resource(s) keep serving",
                            prev.loaded.resources.len()
                        ),
                        ..file_diag(&p.path, String::new())
                    });
                    Parsed {
                        digest: prev.digest,
                        loaded: LoadedFile {
                            diagnostics: Vec::new(),
                            ..prev.loaded.clone()
                        },
                        // The kept parse is not of the file's text now.
                        stamp: None,
                    }
                }
                None => continue,
            };
            let l = &parsed.loaded;
            out.resources.extend(l.resources.iter().cloned());
            out.rejected.extend(l.rejected.iter().cloned());
            out.diagnostics.extend(l.diagnostics.iter().cloned());
            seen.insert(p.path, parsed);
        }
        self.files = seen;
        out
    }

    /// One file of a load: unchanged since its last good parse, by its stamp, or read now
    /// (and given that parse if its text is the same).
    fn pending(&self, path: PathBuf) -> Pending {
        let stamp = Stamp::of(&path);
        let prev = self.files.get(&path);
        if let (Some(now), Some(prev)) = (stamp, prev)
            && prev.stamp == Some(now)
        {
            return Pending {
                text: Ok(String::new()),
                digest: prev.digest,
                parsed: Some(Ok(prev.loaded.clone())),
                stamp: Some(now),
                read: false,
                path,
            };
        }
        let read_at = std::time::SystemTime::now();
        let text = read_file(&path);
        let digest = text.as_deref().map_or(0, digest);
        let parsed = match prev {
            Some(prev) if text.is_ok() && prev.digest == digest => Some(Ok(prev.loaded.clone())),
            _ => None,
        };
        Pending {
            path,
            text,
            digest,
            parsed,
            stamp: stamp.and_then(|s| s.settled(read_at, self.settled)),
            read: true,
        }
    }
}

/// Parses the files of `pending` that have no parse yet (or records why they could not be
/// read), spread over the machine's cores.
fn parse_in_parallel(pending: &mut [Pending]) {
    let mut todo: Vec<&mut Pending> = pending.iter_mut().filter(|p| p.parsed.is_none()).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len());
    let parse = |p: &mut Pending| {
        p.parsed = Some(match &p.text {
            Ok(text) => load_str(&p.path.display().to_string(), text),
            Err(e) => Err(e.clone()),
        });
    };
    if threads <= 1 {
        todo.into_iter().for_each(parse);
        return;
    }
    let chunk = todo.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for part in todo.chunks_mut(chunk) {
            scope.spawn(|| part.iter_mut().for_each(|p| parse(p)));
        }
    });
}

/// A digest of a file's text, to notice that it changed (stable within the process).
fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn file_diag(path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: path.display().to_string(),
        line: 1,
        resource: "-".into(),
        field: "-".into(),
        message,
    }
}

/// The sources of a running gateway: files, and the API server with `--kubernetes`.
pub struct Sources {
    pub files: FileSource,
    pub kube: Option<isthmus_k8s::KubeSource>,
    /// The Kubernetes source's version at the last load.
    pub kube_version: u64,
}

impl Sources {
    pub fn load(&mut self) -> Loaded {
        let mut out = self.files.load();
        if let Some(k) = &self.kube {
            let version = k.version();
            out.changed |= version != self.kube_version;
            self.kube_version = version;
            let s = k.snapshot();
            out.resources.extend(s.resources);
            out.rejected.extend(s.rejected);
            out.diagnostics.extend(s.diagnostics);
        }
        out
    }

    /// Tells the Kubernetes source which Secrets `resources` refer to (it fetches those, and
    /// only those); whether every one of them has been fetched once. Files need nothing.
    pub fn want_secrets(
        &self,
        resources: &[std::sync::Arc<isthmus_api::Resource>],
        instance: &isthmus_config::Instance,
    ) -> bool {
        let Some(k) = &self.kube else {
            return true;
        };
        let refs: Vec<&isthmus_api::Resource> = resources.iter().map(|r| &**r).collect();
        k.want_secrets(&isthmus_config::compile::referenced_secrets(
            &refs, instance,
        ));
        k.secrets_settled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n"
        )
    }

    fn names(l: &Loaded) -> Vec<String> {
        l.resources.iter().map(|r| r.key().name).collect()
    }

    #[test]
    fn unchanged_files_keep_their_parse_and_changed_files_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(
                dir.path().join(format!("{i}.yaml")),
                gateway(&format!("g{i}")),
            )
            .unwrap();
        }
        let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
        assert_eq!(names(&source.load()), ["g0", "g1", "g2", "g3", "g4"]);
        // Same length, other content: the digest, not the size, tells the change.
        std::fs::write(dir.path().join("3.yaml"), gateway("x3")).unwrap();
        std::fs::remove_file(dir.path().join("1.yaml")).unwrap();
        assert_eq!(names(&source.load()), ["g0", "g2", "x3", "g4"]);
        // A file that stops parsing keeps its last good resources; fixed, it is read again.
        std::fs::write(dir.path().join("4.yaml"), "kind: [").unwrap();
        let broken = source.load();
        assert_eq!(names(&broken), ["g0", "g2", "x3", "g4"]);
        assert_eq!(broken.failed, 1);
        std::fs::write(dir.path().join("4.yaml"), gateway("x4")).unwrap();
        let fixed = source.load();
        assert_eq!(
            (names(&fixed), fixed.failed),
            (vec!["g0".into(), "g2".into(), "x3".into(), "x4".into()], 0)
        );
    }

    #[test]
    fn settled_files_are_known_unchanged_by_their_metadata_and_fresh_ones_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        for n in ["a", "b", "c"] {
            std::fs::write(path(&format!("{n}.yaml")), gateway(n)).unwrap();
        }
        let read = |s: &mut FileSource| {
            let l = s.load();
            (l.files_read, names(&l))
        };
        let abc = || vec!["a".to_string(), "b".into(), "c".into()];
        // Just written: a write in the same tick could leave the metadata as it is, so the
        // files are read every time.
        let mut fresh = FileSource::new(vec![dir.path().to_path_buf()]);
        assert_eq!(read(&mut fresh), (3, abc()));
        assert_eq!(read(&mut fresh), (3, abc()));
        // Settled files (here: at once) are not read again until their metadata changes.
        let mut source = FileSource {
            settled: std::time::Duration::ZERO,
            ..FileSource::new(vec![dir.path().to_path_buf()])
        };
        assert_eq!(read(&mut source), (3, abc()));
        assert_eq!(read(&mut source), (0, abc()));
        // (Another size: with `settled` zero, a same-size write within the clock tick of the
        // first one is exactly the case the real setting guards against.)
        std::fs::write(path("b.yaml"), gateway("bb")).unwrap();
        assert_eq!(
            read(&mut source),
            (1, vec!["a".to_string(), "bb".into(), "c".into()])
        );
        // Replaced by a rename (as editors and ConfigMap updates do): another inode.
        std::fs::write(path("c.tmp"), gateway("z")).unwrap();
        std::fs::rename(path("c.tmp"), path("c.yaml")).unwrap();
        assert_eq!(
            read(&mut source),
            (1, vec!["a".to_string(), "bb".into(), "z".into()])
        );
        // A file that stops parsing is read at every load until it is fixed.
        std::fs::write(path("a.yaml"), "kind: [").unwrap();
        assert_eq!(read(&mut source).0, 1);
        assert_eq!(read(&mut source).0, 1);
        assert_eq!(source.load().failed, 1);
    }

    #[test]
    fn a_load_says_whether_anything_changed_since_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("a.yaml"), gateway("a")).unwrap();
        let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
        let changed = |s: &mut FileSource| s.load().changed;
        assert!(changed(&mut source), "the first load");
        assert!(!changed(&mut source), "nothing touched");
        // Rewritten with the same text: no change.
        std::fs::write(path("a.yaml"), gateway("a")).unwrap();
        assert!(!changed(&mut source));
        std::fs::write(path("a.yaml"), gateway("b")).unwrap();
        assert!(changed(&mut source), "edited");
        std::fs::write(path("c.yaml"), gateway("c")).unwrap();
        assert!(changed(&mut source), "added");
        assert!(!changed(&mut source));
        std::fs::write(path("c.yaml"), "kind: [").unwrap();
        assert!(changed(&mut source), "broken");
        assert!(!changed(&mut source), "still broken the same way");
        std::fs::remove_file(path("c.yaml")).unwrap();
        assert!(changed(&mut source), "removed");
        // A source with no files at all: every load may be the first.
        let empty = tempfile::tempdir().unwrap();
        let mut none = FileSource::new(vec![empty.path().to_path_buf()]);
        assert!(changed(&mut none));
    }
}
