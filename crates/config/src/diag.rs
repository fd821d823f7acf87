//! Building diagnostics that point at a resource's field.

use isthmus_api::{Diagnostic, Origin, Severity};

/// Something diagnostics can be attached to: an origin and a `Kind ns/name` label.
pub struct Subject<'a> {
    pub origin: &'a Origin,
    pub resource: String,
}

impl Subject<'_> {
    pub fn diag(&self, severity: Severity, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.origin.file.to_string(),
            line: self.origin.line_of(field),
            resource: self.resource.clone(),
            field: if field.is_empty() {
                "-".into()
            } else {
                field.into()
            },
            message: message.into(),
        }
    }

    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Error, field, message)
    }

    pub fn warning(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Warning, field, message)
    }

    pub fn note(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Note, field, message)
    }
}

pub fn subject(r: &isthmus_api::Resource) -> Subject<'_> {
    Subject {
        origin: r.origin(),
        resource: r.key().to_string(),
    }
}
