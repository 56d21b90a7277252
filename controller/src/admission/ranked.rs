//! An ordered set that also answers "how many keys come before this one" and "which key is
//! at position i" in O(log n): a queue's positions without walking the queue.
//!
//! A treap (a binary search tree kept balanced by random heap priorities) whose nodes count
//! their subtrees, stored in one `Vec` with a free list. The priorities come from the set's
//! own generator, seeded at random for each set, so no order of keys a tenant can choose (not
//! even by reading this source) unbalances it; and split and merge loop instead of recursing,
//! so even an unbalanced tree costs time, never the stack.

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hasher};

/// An ordered set with rank and select.
#[derive(Clone, Debug)]
pub struct Ranked<K> {
    nodes: Vec<Option<Node<K>>>,
    free: Vec<usize>,
    root: Option<usize>,
    seed: u64,
}

#[derive(Clone, Debug)]
struct Node<K> {
    key: K,
    priority: u64,
    size: usize,
    left: Option<usize>,
    right: Option<usize>,
}

impl<K> Default for Ranked<K> {
    fn default() -> Self {
        // std's per-process random SipHash keys (distinct for every RandomState): a seed
        // nobody outside this process knows, without another dependency.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ranked::with_seed(seed)
    }
}

impl<K> Ranked<K> {
    fn with_seed(seed: u64) -> Self {
        Ranked {
            nodes: Vec::new(),
            free: Vec::new(),
            root: None,
            // xorshift never leaves zero.
            seed: seed | 1,
        }
    }

    fn next_priority(&mut self) -> u64 {
        // xorshift64*: cheap, and independent of the keys.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl<K: Ord> Ranked<K> {
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.size(self.root)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// Inserts `key`; false if it was there already.
    pub fn insert(&mut self, key: K) -> bool {
        if self.contains(&key) {
            return false;
        }
        let (left, right) = self.split(self.root, &key, false);
        let node = self.alloc(key);
        let left = self.merge(left, Some(node));
        self.root = self.merge(left, right);
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        if !self.contains(key) {
            return false;
        }
        let (left, rest) = self.split(self.root, key, false);
        let (found, right) = self.split(rest, key, true);
        if let Some(i) = found {
            self.nodes[i] = None;
            self.free.push(i);
        }
        self.root = self.merge(left, right);
        if self.root.is_none() {
            // A drained queue gives its memory back.
            *self = Ranked::default();
        }
        true
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &K) -> bool {
        let mut at = self.root;
        while let Some(i) = at {
            let node = self.node(i);
            at = match key.cmp(&node.key) {
                Ordering::Less => node.left,
                Ordering::Greater => node.right,
                Ordering::Equal => return true,
            };
        }
        false
    }

    /// Number of keys less than `key`.
    pub fn rank(&self, key: &K) -> usize {
        let (mut at, mut before) = (self.root, 0);
        while let Some(i) = at {
            let node = self.node(i);
            if node.key < *key {
                before += self.size(node.left) + 1;
                at = node.right;
            } else {
                at = node.left;
            }
        }
        before
    }

    /// The key at 0-based position `index`.
    pub fn select(&self, mut index: usize) -> Option<&K> {
        let mut at = self.root;
        while let Some(i) = at {
            let node = self.node(i);
            let left = self.size(node.left);
            match index.cmp(&left) {
                Ordering::Less => at = node.left,
                Ordering::Equal => return Some(&node.key),
                Ordering::Greater => {
                    index -= left + 1;
                    at = node.right;
                }
            }
        }
        None
    }

    /// The smallest key.
    pub fn first(&self) -> Option<&K> {
        self.select(0)
    }

    /// The keys in order.
    pub fn iter(&self) -> Iter<'_, K> {
        let mut iter = Iter {
            set: self,
            stack: Vec::new(),
        };
        iter.descend(self.root);
        iter
    }

    /// The keys less than `key`, in order.
    pub fn before<'a>(&'a self, key: &'a K) -> impl Iterator<Item = &'a K> {
        self.iter().take_while(move |k| *k < key)
    }

    fn node(&self, i: usize) -> &Node<K> {
        // Indices come only from the tree's own links, which point at live nodes.
        self.nodes[i].as_ref().expect("a linked node is live")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node<K> {
        self.nodes[i].as_mut().expect("a linked node is live")
    }

    fn size(&self, at: Option<usize>) -> usize {
        at.map_or(0, |i| self.node(i).size)
    }

    fn update(&mut self, i: usize) {
        let (left, right) = (self.node(i).left, self.node(i).right);
        let size = self.size(left) + self.size(right) + 1;
        self.node_mut(i).size = size;
    }

    fn alloc(&mut self, key: K) -> usize {
        let priority = self.next_priority();
        let node = Some(Node {
            key,
            priority,
            size: 1,
            left: None,
            right: None,
        });
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        }
    }

    /// Splits the tree at `at` into keys `< key` and the rest (`<= key` and the rest when
    /// `inclusive`). Walks one path down, hooking each node onto the side it belongs to.
    fn split(
        &mut self,
        mut at: Option<usize>,
        key: &K,
        inclusive: bool,
    ) -> (Option<usize>, Option<usize>) {
        let (mut left, mut right) = (None, None);
        // The nodes whose right (left) child receives the next node of the left (right) tree.
        let (mut left_hook, mut right_hook): (Option<usize>, Option<usize>) = (None, None);
        let mut path = Vec::new();
        while let Some(i) = at {
            path.push(i);
            let goes_left = match self.node(i).key.cmp(key) {
                Ordering::Less => true,
                Ordering::Equal => inclusive,
                Ordering::Greater => false,
            };
            if goes_left {
                match left_hook {
                    Some(h) => self.node_mut(h).right = Some(i),
                    None => left = Some(i),
                }
                left_hook = Some(i);
                at = self.node(i).right;
            } else {
                match right_hook {
                    Some(h) => self.node_mut(h).left = Some(i),
                    None => right = Some(i),
                }
                right_hook = Some(i);
                at = self.node(i).left;
            }
        }
        if let Some(h) = left_hook {
            self.node_mut(h).right = None;
        }
        if let Some(h) = right_hook {
            self.node_mut(h).left = None;
        }
        self.update_path(&path);
        (left, right)
    }

    /// Joins two trees whose keys are all ordered `left < right`, walking down the seam.
    fn merge(&mut self, mut left: Option<usize>, mut right: Option<usize>) -> Option<usize> {
        let mut root = None;
        // The node, and its side (true: right), that receives the next node of the seam.
        let mut hook: Option<(usize, bool)> = None;
        let mut path = Vec::new();
        loop {
            let (next, side) = match (left, right) {
                (None, tree) | (tree, None) => {
                    self.attach(hook, &mut root, tree);
                    break;
                }
                (Some(l), Some(r)) if self.node(l).priority > self.node(r).priority => {
                    left = self.node(l).right;
                    (l, true)
                }
                (Some(_), Some(r)) => {
                    right = self.node(r).left;
                    (r, false)
                }
            };
            self.attach(hook, &mut root, Some(next));
            path.push(next);
            hook = Some((next, side));
        }
        self.update_path(&path);
        root
    }

    fn attach(
        &mut self,
        hook: Option<(usize, bool)>,
        root: &mut Option<usize>,
        tree: Option<usize>,
    ) {
        match hook {
            Some((h, true)) => self.node_mut(h).right = tree,
            Some((h, false)) => self.node_mut(h).left = tree,
            None => *root = tree,
        }
    }

    /// Recounts the nodes of a path, deepest first (each one's changed child is deeper).
    fn update_path(&mut self, path: &[usize]) {
        for &i in path.iter().rev() {
            self.update(i);
        }
    }
}

/// In-order iterator of a [`Ranked`] set.
pub struct Iter<'a, K> {
    set: &'a Ranked<K>,
    /// The nodes whose key and right subtree are still to come, innermost last.
    stack: Vec<usize>,
}

impl<K: Ord> Iter<'_, K> {
    fn descend(&mut self, mut at: Option<usize>) {
        while let Some(i) = at {
            self.stack.push(i);
            at = self.set.node(i).left;
        }
    }
}

impl<'a, K: Ord> Iterator for Iter<'a, K> {
    type Item = &'a K;

    fn next(&mut self) -> Option<&'a K> {
        let i = self.stack.pop()?;
        let node = self.set.node(i);
        self.descend(node.right);
        Some(&node.key)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn agrees_with_a_btreeset_over_random_inserts_and_removes() {
        let (mut ranked, mut model) = (Ranked::default(), BTreeSet::new());
        let mut x: u64 = 7;
        for step in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) % 2_000;
            if step % 3 == 0 {
                assert_eq!(ranked.remove(&key), model.remove(&key), "remove {key}");
            } else {
                assert_eq!(ranked.insert(key), model.insert(key), "insert {key}");
            }
            assert_eq!(ranked.len(), model.len());
            if step % 97 == 0 {
                assert_eq!(ranked.rank(&key), model.range(..key).count(), "rank {key}");
                let i = usize::try_from(key).unwrap_or(0) % (model.len() + 1);
                assert_eq!(ranked.select(i), model.iter().nth(i), "select {i}");
                assert_eq!(ranked.first(), model.first());
            }
        }
        assert!(ranked.iter().eq(model.iter()));
        let cut = 1_000;
        assert!(ranked.before(&cut).eq(model.range(..cut)));
    }

    /// Depth of the tree, without recursion (the tree under test may be a list).
    fn depth<K: Ord>(r: &Ranked<K>) -> usize {
        let (mut deepest, mut stack) = (0, vec![(r.root, 0)]);
        while let Some((at, d)) = stack.pop() {
            deepest = deepest.max(d);
            if let Some(i) = at {
                stack.push((r.node(i).left, d + 1));
                stack.push((r.node(i).right, d + 1));
            }
        }
        deepest
    }

    /// The keys that make a set seeded with `seed` a list: the i-th key inserted ranks where
    /// the i-th priority ranks, highest first, so heap order and key order coincide.
    fn adversarial_keys(seed: u64, n: usize) -> Vec<usize> {
        let mut probe = Ranked::<usize>::with_seed(seed);
        let priorities: Vec<u64> = (0..n).map(|_| probe.next_priority()).collect();
        let mut by_priority: Vec<usize> = (0..n).collect();
        by_priority.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
        let mut keys = vec![0; n];
        for (rank, &i) in by_priority.iter().enumerate() {
            keys[i] = rank;
        }
        keys
    }

    /// A tenant who read this source knows the generator, and on main its seed (a constant):
    /// keys chosen for that seed no longer unbalance a set, whose seed is random.
    #[test]
    fn keys_chosen_against_the_published_seed_do_not_unbalance_it() {
        let mut ranked = Ranked::default();
        for key in adversarial_keys(0x9E37_79B9_7F4A_7C15, 5_000) {
            ranked.insert(key);
        }
        let d = depth(&ranked);
        assert!(d < 60, "depth {d} for 5,000 keys");
    }

    /// Even a tree that is a list (a seed the keys were chosen for) is split and merged in a
    /// loop: 10,000 levels on a 256 KiB stack (recursion needs megabytes).
    #[test]
    fn a_degenerate_tree_costs_no_stack() {
        let worker = std::thread::Builder::new().stack_size(256 << 10);
        let handle = worker
            .spawn(|| {
                let seed = 42;
                let mut ranked = Ranked::with_seed(seed);
                let keys = adversarial_keys(seed, 10_000);
                for &key in &keys {
                    assert!(ranked.insert(key));
                }
                assert_eq!(depth(&ranked), 10_000, "the keys do make a list");
                assert_eq!(ranked.rank(&9_999), 9_999);
                assert_eq!(ranked.select(5_000), Some(&5_000));
                for key in keys.iter().rev() {
                    assert!(ranked.remove(key));
                }
                ranked.is_empty()
            })
            .expect("spawn");
        assert!(handle.join().expect("no stack overflow"));
    }

    #[test]
    fn stays_shallow_when_keys_arrive_in_order() {
        // Runs are created oldest first: sorted inserts must not degrade to a list.
        let mut ranked = Ranked::default();
        for k in 0..100_000u32 {
            ranked.insert(k);
        }
        let d = depth(&ranked);
        assert!(d < 60, "depth {d} for 100,000 sorted keys");
        assert_eq!(ranked.rank(&50_000), 50_000);
        assert_eq!(ranked.select(99_999), Some(&99_999));
        for k in 0..100_000u32 {
            assert!(ranked.remove(&k));
        }
        assert!(ranked.is_empty());
        assert_eq!(
            ranked.nodes.capacity(),
            0,
            "a drained set gives its memory back"
        );
    }
}
