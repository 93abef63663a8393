//! One topic trie for AMQP topic exchanges (and, later, MQTT subscriptions).
//!
//! Binding keys are split into words on `.`; `*` matches exactly one word and
//! `#` zero or more. Matching walks the trie once per routing key instead of
//! testing every binding, and remembers (node, position) pairs it already
//! visited below a `#` so that patterns such as `#.#.#` cannot make it
//! exponential.

use std::collections::HashMap;
use std::collections::HashSet;

/// A trie of word patterns, each leading to a set of destinations.
#[derive(Debug)]
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

#[derive(Debug)]
struct Node<D> {
    children: HashMap<Box<str>, Node<D>>,
    star: Option<Box<Node<D>>>,
    hash: Option<Box<Node<D>>>,
    destinations: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            star: None,
            hash: None,
            destinations: Vec::new(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
            && self.destinations.is_empty()
    }
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

/// Splits a key into its words; the empty key has no words.
pub fn words(key: &str) -> impl Iterator<Item = &str> {
    let mut it = Some(key.split('.'));
    if key.is_empty() {
        it = None;
    }
    it.into_iter().flatten()
}

impl<D: PartialEq + Clone> TopicTrie<D> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (pattern, destination) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `destination` under `pattern`; false if that exact pair was present.
    pub fn insert(&mut self, pattern: &str, destination: D) -> bool {
        let mut node = &mut self.root;
        for word in words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                w => node.children.entry(w.into()).or_default(),
            };
        }
        if node.destinations.contains(&destination) {
            return false;
        }
        node.destinations.push(destination);
        self.len += 1;
        true
    }

    /// Removes the pair; false if it was not present. Empty branches are pruned.
    pub fn remove(&mut self, pattern: &str, destination: &D) -> bool {
        let pattern_words: Vec<&str> = words(pattern).collect();
        let removed = Self::remove_at(&mut self.root, &pattern_words, destination);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node<D>, rest: &[&str], destination: &D) -> bool {
        let Some((first, tail)) = rest.split_first() else {
            let before = node.destinations.len();
            node.destinations.retain(|d| d != destination);
            return node.destinations.len() != before;
        };
        match *first {
            "*" | "#" => {
                let slot = if *first == "*" {
                    &mut node.star
                } else {
                    &mut node.hash
                };
                let Some(child) = slot.as_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, tail, destination);
                if child.is_empty() {
                    *slot = None;
                }
                removed
            }
            w => {
                let Some(child) = node.children.get_mut(w) else {
                    return false;
                };
                let removed = Self::remove_at(child, tail, destination);
                if child.is_empty() {
                    node.children.remove(w);
                }
                removed
            }
        }
    }

    /// Calls `found` for every destination whose pattern matches `routing_key`.
    /// A destination bound under several matching patterns is reported once per pattern;
    /// callers deduplicate.
    pub fn matches(&self, routing_key: &str, mut found: impl FnMut(&D)) {
        let key_words: Vec<&str> = words(routing_key).collect();
        let mut seen = HashSet::new();
        Self::walk(&self.root, &key_words, 0, &mut seen, &mut found);
    }

    fn walk<'a>(
        node: &'a Node<D>,
        key: &[&str],
        at: usize,
        seen: &mut HashSet<(*const Node<D>, usize)>,
        found: &mut impl FnMut(&'a D),
    ) {
        if at == key.len() {
            node.destinations.iter().for_each(&mut *found);
        } else {
            if let Some(child) = node.children.get(key[at]) {
                Self::walk(child, key, at + 1, seen, found);
            }
            if let Some(child) = &node.star {
                Self::walk(child, key, at + 1, seen, found);
            }
        }
        if let Some(child) = &node.hash {
            for next in at..=key.len() {
                if seen.insert((&**child as *const Node<D>, next)) {
                    Self::walk(child, key, next, seen, found);
                }
            }
        }
    }

    /// Every (pattern, destination) pair, for listings.
    pub fn entries(&self) -> Vec<(String, D)> {
        let mut out = Vec::new();
        Self::collect(&self.root, &mut Vec::new(), &mut out);
        out
    }

    fn collect(node: &Node<D>, path: &mut Vec<String>, out: &mut Vec<(String, D)>) {
        for d in &node.destinations {
            out.push((path.join("."), d.clone()));
        }
        for (w, child) in &node.children {
            path.push(w.to_string());
            Self::collect(child, path, out);
            path.pop();
        }
        for (w, child) in [("*", &node.star), ("#", &node.hash)] {
            if let Some(child) = child {
                path.push(w.to_string());
                Self::collect(child, path, out);
                path.pop();
            }
        }
    }
}

/// The reference matcher: does `pattern` match `routing_key`? Used by tests and
/// by callers that match a single pattern.
pub fn pattern_matches(pattern: &str, routing_key: &str) -> bool {
    let p: Vec<&str> = words(pattern).collect();
    let k: Vec<&str> = words(routing_key).collect();
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&"*", rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((w, rest)) => k.first() == Some(w) && go(rest, &k[1..]),
        }
    }
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matched(trie: &TopicTrie<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        trie.matches(key, |d| out.push(*d));
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn star_and_hash() {
        let mut t = TopicTrie::new();
        t.insert("a.*.c", 1);
        t.insert("a.#", 2);
        t.insert("#", 3);
        t.insert("a.#.c", 4);
        t.insert("", 5);
        assert_eq!(matched(&t, "a.b.c"), vec![1, 2, 3, 4]);
        assert_eq!(matched(&t, "a"), vec![2, 3]);
        assert_eq!(matched(&t, "a.c"), vec![2, 3, 4]);
        assert_eq!(matched(&t, "b"), vec![3]);
        assert_eq!(matched(&t, ""), vec![3, 5]);
    }

    #[test]
    fn remove_prunes_and_reports() {
        let mut t = TopicTrie::new();
        assert!(t.insert("a.*", 1));
        assert!(!t.insert("a.*", 1));
        assert!(t.remove("a.*", &1));
        assert!(!t.remove("a.*", &1));
        assert!(t.root.is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn many_hashes_stay_polynomial() {
        let mut t = TopicTrie::new();
        t.insert("#.#.#.#.#.#.#.#.#.#.x", 1);
        let key = vec!["a"; 60].join(".");
        assert!(matched(&t, &key).is_empty());
        assert_eq!(matched(&t, &format!("{key}.x")), vec![1]);
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("".to_string())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 0..5), 1..8),
            key in proptest::collection::vec(word(), 0..6),
        ) {
            let key = key.join(".");
            let mut t = TopicTrie::new();
            for (i, p) in patterns.iter().enumerate() {
                t.insert(&p.join("."), i as u32);
            }
            let expected: Vec<u32> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| pattern_matches(&p.join("."), &key))
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(matched(&t, &key), expected);
        }
    }
}
