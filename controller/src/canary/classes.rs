//! What the canary knows of the RuntimeClasses it proves, from the controller's one
//! RuntimeClass watch: a fingerprint per class, fanned out to each class's loop, which runs
//! again when its class changes.

use std::collections::BTreeMap;

use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::digest::sha256_hex;

/// What the RuntimeClass watch last saw of a class: `None` before it synced, `Some(None)`
/// when the class is absent, else a fingerprint of what a canary depends on.
pub type Seen = Option<Option<String>>;

/// Feeds each class's loop with what the controller's RuntimeClass watch knows of it.
pub(super) async fn follow_runtime_classes(
    changes: BTreeMap<String, watch::Sender<Seen>>,
    mut classes: watch::Receiver<Classes>,
) {
    loop {
        if let Some(known) = classes.borrow_and_update().as_ref() {
            for (class, tx) in &changes {
                let seen = known.get(class).cloned();
                tx.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&seen);
                    *current = Some(seen);
                    changed
                });
            }
        }
        if classes.changed().await.is_err() {
            return; // the watch is gone: the controller is stopping
        }
    }
}

/// What the controller's RuntimeClass watch knows: `None` until it listed, then each class's
/// [`fingerprint`] by name.
pub type Classes = Option<BTreeMap<String, String>>;

/// Keeps [`Classes`] up to date from the events of the controller's one RuntimeClass watch
/// (the cache the reconciles read is fed by the same watch).
pub struct ClassFingerprints {
    known: watch::Sender<Classes>,
    /// What a re-list in progress has returned so far.
    listing: BTreeMap<String, String>,
}

impl ClassFingerprints {
    /// Publishes into `known`.
    pub fn new(known: watch::Sender<Classes>) -> Self {
        ClassFingerprints {
            known,
            listing: BTreeMap::new(),
        }
    }

    /// Takes one watch event.
    pub fn apply(&mut self, event: &watcher::Event<RuntimeClass>) {
        match event {
            watcher::Event::Init => self.listing.clear(),
            watcher::Event::InitApply(rc) => {
                self.listing.insert(rc.name_any(), fingerprint(rc));
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.listing);
                self.known.send_replace(Some(listed));
            }
            watcher::Event::Apply(rc) => self.known.send_modify(|known| {
                known
                    .get_or_insert_default()
                    .insert(rc.name_any(), fingerprint(rc));
            }),
            watcher::Event::Delete(rc) => self.known.send_modify(|known| {
                if let Some(known) = known {
                    known.remove(&rc.name_any());
                }
            }),
        }
    }
}

/// What a canary run depends on in a RuntimeClass: its identity, handler, overhead and
/// scheduling (labels and annotations do not change the sandbox).
pub(super) fn fingerprint(rc: &RuntimeClass) -> String {
    let content = serde_json::json!([rc.uid(), rc.handler, rc.overhead, rc.scheduling]);
    sha256_hex(content.to_string().as_bytes())
}

/// Whether the watch now knows a different RuntimeClass than the run saw.
pub(super) fn moved(now: &Seen, seen: &Seen) -> bool {
    matches!((now, seen), (Some(now), Some(seen)) if now != seen)
}

/// Returns once the watch reports a RuntimeClass other than `seen` (never, once the watch
/// is gone).
pub(super) async fn changed_from(changes: &mut watch::Receiver<Seen>, seen: &Seen) {
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = changes.borrow_and_update().clone();
        if now.is_some() && (seen.is_none() || moved(&now, seen)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_runtime_class_counts_as_a_change() {
        let a: Seen = Some(Some("a".into()));
        assert!(!moved(&None, &a), "the watch has not synced");
        assert!(!moved(&a, &a));
        assert!(moved(&Some(None), &a), "deleted");
        assert!(moved(&a, &Some(None)), "created");
        assert!(!moved(&a, &None), "the run could not read it");
    }

    #[tokio::test]
    async fn each_class_loop_sees_its_class_as_the_one_watch_reports_it() {
        let class = |name: &str, handler: &str| RuntimeClass {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            handler: handler.into(),
            ..Default::default()
        };
        let (tx, classes) = watch::channel(None);
        let mut fingerprints = ClassFingerprints::new(tx);
        let (gvisor_tx, mut gvisor) = watch::channel(None);
        let follow = tokio::spawn(follow_runtime_classes(
            [("gvisor".to_string(), gvisor_tx)].into(),
            classes,
        ));
        // A re-list in progress says nothing yet.
        fingerprints.apply(&watcher::Event::Init);
        fingerprints.apply(&watcher::Event::InitApply(class("gvisor", "runsc")));
        tokio::task::yield_now().await;
        assert_eq!(*gvisor.borrow(), None, "not synced");
        fingerprints.apply(&watcher::Event::InitDone);
        let listed = gvisor
            .wait_for(Option::is_some)
            .await
            .expect("sent")
            .clone();
        let first = fingerprint(&class("gvisor", "runsc"));
        assert_eq!(listed, Some(Some(first.clone())));
        // Another class changing is no change of this one.
        fingerprints.apply(&watcher::Event::Apply(class("other", "runc")));
        tokio::task::yield_now().await;
        assert!(!gvisor.has_changed().expect("open"));
        fingerprints.apply(&watcher::Event::Apply(class("gvisor", "runsc-kvm")));
        let changed = gvisor
            .wait_for(|s| s != &Some(Some(first.clone())))
            .await
            .expect("sent")
            .clone();
        assert_eq!(
            changed,
            Some(Some(fingerprint(&class("gvisor", "runsc-kvm"))))
        );
        fingerprints.apply(&watcher::Event::Delete(class("gvisor", "runsc-kvm")));
        let gone = gvisor
            .wait_for(|s| s == &Some(None))
            .await
            .expect("sent")
            .clone();
        assert_eq!(gone, Some(None), "deleted");
        drop(fingerprints);
        follow.await.expect("the loop ends with the watch");
    }
}
