//! Routes compiled by the previous build, reused by the next one.
//!
//! With a large configuration, compiling every VirtualService's routes again is most of a
//! reload, although an edit usually touches one of them. A VirtualService's routes for one
//! binding (its Gateway, or the mesh) and port depend on the VirtualService itself, on the
//! instance, and on nothing else but the clusters its destinations resolve to: each one's
//! name and its index in the snapshot's cluster list (given out in the order destinations are
//! first met, which the other VirtualServices can change), or why it does not resolve. The
//! services and DestinationRules behind them count only through those answers.
//!
//! So an entry keeps the cluster lookups its compilation made, in order, with their answers.
//! While the instance is the same, the routes of a VirtualService that is the same resource
//! as before are taken from here if making its lookups again gets the same answers, and
//! compiled afresh otherwise. A change of endpoints or load-balancing policy, which lives in
//! the clusters themselves, keeps every route.
//!
//! Resources are known by their address. Only [`crate::Builder`] keeps a memo, and it keeps
//! every resource of the previous build alive until the next build is done, so an address
//! found both in the memo and in the build's input is the same resource.

use std::collections::HashMap;
use std::sync::Arc;

use isthmus_api::istio::virtual_service::VirtualServiceSpec;
use isthmus_api::{Diagnostic, Object, Resource};

use super::routes::{Compiled, merged};
use super::services::Unresolved;
use crate::instance::Instance;
use crate::snapshot::{Excluded, Route};

/// Compiled routes of the previous build and of the one under way.
#[derive(Default)]
pub struct RouteMemo {
    /// The instance the entries were compiled for: what routes depend on besides their
    /// VirtualService and its cluster lookups (the domain suffix, the namespace).
    instance: Option<Instance>,
    /// The previous build's entries.
    previous: HashMap<Key, Arc<Entry>>,
    /// The entries this build used or made: the next build's `previous`.
    current: HashMap<Key, Arc<Entry>>,
    /// Route tables of hosts, by the routes merged into them, of the previous build and of
    /// this one.
    previous_hosts: HashMap<Vec<usize>, HostEntry>,
    current_hosts: HashMap<Vec<usize>, HostEntry>,
}

/// A host's route table and the parts it was merged from (kept, so that their addresses are
/// not reused while the entry lives).
struct HostEntry {
    _parts: Vec<Arc<Compiled>>,
    routes: Arc<Vec<Route>>,
    excluded: Arc<Vec<Excluded>>,
}

/// One VirtualService compiled for one binding on one port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    resource: usize,
    port: u16,
    /// The Gateway `(namespace, name)`, or `None` for the mesh.
    gateway: Option<(String, String)>,
}

impl Key {
    pub(super) fn new(r: &Resource, port: u16, gateway: Option<(&str, &str)>) -> Self {
        Key {
            resource: std::ptr::from_ref(r) as usize,
            port,
            gateway: gateway.map(|(ns, name)| (ns.to_string(), name.to_string())),
        }
    }
}

pub(super) struct Entry {
    pub compiled: Arc<Compiled>,
    pub diagnostics: Vec<Diagnostic>,
    pub clusters: Vec<ClusterCall>,
}

/// A cluster a compilation asked for, and what it got.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterCall {
    pub host: String,
    pub port: Option<u16>,
    pub subset: Option<String>,
    pub outcome: Outcome,
}

/// Everything of a cluster lookup that compiled routes carry: the cluster's name and index,
/// or why there is none (its message goes into a diagnostic).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Found(String, usize),
    Unresolved(Unresolved),
}

/// The cluster lookups of one compilation, first of each only, findable by what was asked.
#[derive(Default)]
pub struct Journal {
    calls: Vec<ClusterCall>,
    /// Positions in `calls` by a hash of what was asked: finding a lookup must not allocate,
    /// nor scan every earlier one (a VirtualService may have thousands of destinations).
    by_ask: HashMap<u64, Vec<usize>>,
}

impl Journal {
    fn ask_hash(host: &str, port: Option<u16>, subset: Option<&str>) -> u64 {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the hash must be the same at every call within a compilation.
        let mut h = std::hash::DefaultHasher::new();
        (host, port, subset).hash(&mut h);
        h.finish()
    }

    /// The earlier lookup of the same cluster, if any.
    pub fn find(
        &self,
        host: &str,
        port: Option<u16>,
        subset: Option<&str>,
    ) -> Option<&ClusterCall> {
        self.by_ask
            .get(&Self::ask_hash(host, port, subset))?
            .iter()
            .filter_map(|i| self.calls.get(*i))
            .find(|c| c.host == host && c.port == port && c.subset.as_deref() == subset)
    }

    /// Records a lookup (the caller has checked it is the first of its cluster).
    pub fn push(&mut self, call: ClusterCall) {
        let h = Self::ask_hash(&call.host, call.port, call.subset.as_deref());
        self.by_ask.entry(h).or_default().push(self.calls.len());
        self.calls.push(call);
    }

    pub fn into_calls(self) -> Vec<ClusterCall> {
        self.calls
    }
}

impl Outcome {
    pub fn of(got: &Result<(String, usize), Unresolved>) -> Self {
        match got {
            Ok((name, i)) => Outcome::Found(name.clone(), *i),
            Err(why) => Outcome::Unresolved(why.clone()),
        }
    }

    /// The lookup's answer again.
    pub fn answer(&self) -> Result<(String, usize), Unresolved> {
        match self {
            Outcome::Found(name, i) => Ok((name.clone(), *i)),
            Outcome::Unresolved(why) => Err(why.clone()),
        }
    }
}

impl RouteMemo {
    /// Starts a build: the previous build's entries stay usable only if the instance is the
    /// same.
    pub(super) fn begin(&mut self, instance: &Instance) {
        let mut previous = std::mem::take(&mut self.current);
        if self.instance.as_ref() != Some(instance) {
            previous.clear();
            self.instance = Some(instance.clone());
        }
        self.previous = previous;
        self.previous_hosts = std::mem::take(&mut self.current_hosts);
    }

    /// Ends the build: entries it did not use are dropped.
    pub(super) fn end(&mut self) {
        self.previous.clear();
        self.previous_hosts.clear();
    }

    /// The route table of a host merged from `parts` ([`merged`]): the previous build's if
    /// it was merged from the very same parts.
    pub(super) fn host(
        &mut self,
        parts: Vec<Arc<Compiled>>,
    ) -> (Arc<Vec<Route>>, Arc<Vec<Excluded>>) {
        let key: Vec<usize> = parts.iter().map(|p| Arc::as_ptr(p) as usize).collect();
        // Another host of this build with the same parts (a VirtualService with two hosts).
        if let Some(e) = self.current_hosts.get(&key) {
            return (e.routes.clone(), e.excluded.clone());
        }
        let entry = match self.previous_hosts.remove(&key) {
            Some(entry) => entry,
            None => {
                let (routes, excluded) = merged(&parts);
                HostEntry {
                    _parts: parts,
                    routes: Arc::new(routes),
                    excluded: Arc::new(excluded),
                }
            }
        };
        let out = (entry.routes.clone(), entry.excluded.clone());
        self.current_hosts.insert(key, entry);
        out
    }

    /// The previous build's entry for `key`, if any.
    pub(super) fn previous(&self, key: &Key) -> Option<Arc<Entry>> {
        self.previous.get(key).cloned()
    }

    /// Keeps `entry` for the next build.
    pub(super) fn keep(&mut self, key: Key, entry: Arc<Entry>) {
        self.current.insert(key, entry);
    }
}

/// Whether a VirtualService's routes depend on nothing but itself and the context: not on
/// delegate VirtualServices, nor on files read at compile time (a `directResponse` body file).
pub(super) fn cacheable(vs: &Object<VirtualServiceSpec>) -> bool {
    vs.spec.http.iter().all(|route| {
        route.delegate.is_none()
            && route
                .direct_response
                .as_ref()
                .and_then(|d| d.body.as_ref())
                .is_none_or(|b| b.filename.is_none())
    })
}
