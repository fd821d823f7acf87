//! The sources: the file source reads the configured files and folders (a file that fails to
//! parse keeps the resources it had before, so a typo never takes a route down), and the
//! Kubernetes source gives the API server's objects as the same resources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use isthmus_api::load::{LoadedFile, config_files, load_file};
use isthmus_api::{Diagnostic, Resource, ResourceKey, Severity};

#[derive(Default)]
pub struct Loaded {
    pub resources: Vec<Resource>,
    pub rejected: Vec<ResourceKey>,
    pub diagnostics: Vec<Diagnostic>,
    /// Paths that could not be read and files that do not parse (their diagnostics say why).
    pub failed: usize,
}

pub struct FileSource {
    roots: Vec<PathBuf>,
    /// The last good parse of every file.
    files: BTreeMap<PathBuf, LoadedFile>,
}

impl FileSource {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        FileSource {
            roots,
            files: BTreeMap::new(),
        }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Reads every file again.
    pub fn load(&mut self) -> Loaded {
        let mut out = Loaded::default();
        let mut seen: BTreeMap<PathBuf, LoadedFile> = BTreeMap::new();
        for root in &self.roots {
            let files = match config_files(root) {
                Ok(f) => f,
                Err(e) => {
                    out.diagnostics
                        .push(file_diag(root, format!("cannot read: {e}")));
                    out.failed += 1;
                    continue;
                }
            };
            for file in files {
                let loaded = match load_file(&file) {
                    Ok(l) => l,
                    Err(e) => {
                        out.diagnostics.push(e.0);
                        out.failed += 1;
                        match self.files.get(&file) {
                            Some(prev) => {
                                out.diagnostics.push(Diagnostic {
                                    severity: Severity::Note,
                                    message: format!(
                                        "the file does not parse; its previous {} resource(s) keep serving",
                                        prev.resources.len()
                                    ),
                                    ..file_diag(&file, String::new())
                                });
                                LoadedFile {
                                    diagnostics: Vec::new(),
                                    ..prev.clone()
                                }
                            }
                            None => continue,
                        }
                    }
                };
                out.resources.extend(loaded.resources.iter().cloned());
                out.rejected.extend(loaded.rejected.iter().cloned());
                out.diagnostics.extend(loaded.diagnostics.iter().cloned());
                seen.insert(file, loaded);
            }
        }
        self.files = seen;
        out
    }
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
}

impl Sources {
    pub fn load(&mut self) -> Loaded {
        let mut out = self.files.load();
        if let Some(k) = &self.kube {
            let s = k.snapshot();
            out.resources.extend(s.resources);
            out.rejected.extend(s.rejected);
            out.diagnostics.extend(s.diagnostics);
        }
        out
    }
}
