//! An ordered set that also answers "how many keys come before this one" and "which key is
//! at position i" in O(log n): a queue's positions without walking the queue.
//!
//! A treap (a binary search tree kept balanced by random heap priorities) whose nodes count
//! their subtrees, stored in one `Vec` with a free list. The priorities come from the set's
//! own generator, so the order in which tenants create runs cannot unbalance it.

use std::cmp::Ordering;

/// An ordered set with rank and select.
#[derive(Debug)]
pub struct Ranked<K> {
    nodes: Vec<Option<Node<K>>>,
    free: Vec<usize>,
    root: Option<usize>,
    seed: u64,
}

#[derive(Debug)]
struct Node<K> {
    key: K,
    priority: u64,
    size: usize,
    left: Option<usize>,
    right: Option<usize>,
}

impl<K> Default for Ranked<K> {
    fn default() -> Self {
        Ranked {
            nodes: Vec::new(),
            free: Vec::new(),
            root: None,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
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
        // xorshift64*: cheap, and independent of the keys.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let priority = self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
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
    /// `inclusive`).
    fn split(
        &mut self,
        at: Option<usize>,
        key: &K,
        inclusive: bool,
    ) -> (Option<usize>, Option<usize>) {
        let Some(i) = at else {
            return (None, None);
        };
        let goes_left = match self.node(i).key.cmp(key) {
            Ordering::Less => true,
            Ordering::Equal => inclusive,
            Ordering::Greater => false,
        };
        if goes_left {
            let (middle, right) = self.split(self.node(i).right, key, inclusive);
            self.node_mut(i).right = middle;
            self.update(i);
            (Some(i), right)
        } else {
            let (left, middle) = self.split(self.node(i).left, key, inclusive);
            self.node_mut(i).left = middle;
            self.update(i);
            (left, Some(i))
        }
    }

    /// Joins two trees whose keys are all ordered `left < right`.
    fn merge(&mut self, left: Option<usize>, right: Option<usize>) -> Option<usize> {
        let (l, r) = match (left, right) {
            (None, tree) | (tree, None) => return tree,
            (Some(l), Some(r)) => (l, r),
        };
        if self.node(l).priority > self.node(r).priority {
            let joined = self.merge(self.node(l).right, Some(r));
            self.node_mut(l).right = joined;
            self.update(l);
            Some(l)
        } else {
            let joined = self.merge(Some(l), self.node(r).left);
            self.node_mut(r).left = joined;
            self.update(r);
            Some(r)
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

    #[test]
    fn stays_shallow_when_keys_arrive_in_order() {
        // Runs are created oldest first: sorted inserts must not degrade to a list.
        let mut ranked = Ranked::default();
        for k in 0..100_000u32 {
            ranked.insert(k);
        }
        fn depth(r: &Ranked<u32>, at: Option<usize>) -> usize {
            at.map_or(0, |i| {
                let n = r.node(i);
                1 + depth(r, n.left).max(depth(r, n.right))
            })
        }
        let d = depth(&ranked, ranked.root);
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
