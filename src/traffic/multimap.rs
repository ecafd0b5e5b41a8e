//! `{name: [values]}`, the seed's shape for headers and query arguments, held compactly:
//! every name and value in one string, and a list of where each pair lies in it, sorted
//! by name (values of one name in the order they came). Two allocations for a whole
//! header block, however many headers it has, where a map of strings to lists of strings
//! takes three per header: this is built for every exchange recorded, parsed for every
//! message read from Redis, and dropped for each of them.
//!
//! It reads and writes as the JSON object of arrays it stands for, names in byte order
//! (as a `BTreeMap` would write them); a name given twice keeps the values of its last
//! occurrence, as a map would. A name with an empty array holds no value and is left out.

use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where one name and one of its values lie in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    name: (usize, usize),
    value: (usize, usize),
}

#[derive(Clone, Default)]
pub struct MultiMap {
    text: String,
    /// Sorted by name; values of one name next to each other, in the order they came.
    pairs: Vec<Pair>,
}

/// The values of one name.
#[derive(Clone)]
pub struct Values<'a> {
    map: &'a MultiMap,
    range: Range<usize>,
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let i = self.range.next()?;
        Some(self.map.value(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Values<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let i = self.range.next_back()?;
        Some(self.map.value(i))
    }
}

impl ExactSizeIterator for Values<'_> {}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.clone()).finish()
    }
}

impl MultiMap {
    pub fn new() -> Self {
        Self::default()
    }

    fn name(&self, i: usize) -> &str {
        let (a, b) = self.pairs[i].name;
        &self.text[a..b]
    }

    fn value(&self, i: usize) -> &str {
        let (a, b) = self.pairs[i].value;
        &self.text[a..b]
    }

    fn append(&mut self, s: &str) -> (usize, usize) {
        let start = self.text.len();
        self.text.push_str(s);
        (start, self.text.len())
    }

    /// Where the pairs of `name` are (an empty range where they would go).
    fn span(&self, name: &str) -> Range<usize> {
        let start = self.pairs.partition_point(|p| {
            let (a, b) = p.name;
            &self.text[a..b] < name
        });
        let end = start
            + self.pairs[start..]
                .iter()
                .take_while(|p| &self.text[p.name.0..p.name.1] == name)
                .count();
        start..end
    }

    /// Adds a value to `name`, after the ones it has.
    pub fn push(&mut self, name: &str, value: &str) {
        let at = self.span(name);
        // The name's text is shared by its values.
        let name_at = match at.is_empty() {
            true => self.append(name),
            false => self.pairs[at.start].name,
        };
        let value = self.append(value);
        self.pairs.insert(
            at.end,
            Pair {
                name: name_at,
                value,
            },
        );
    }

    /// Sets the values of `name`, replacing any it had.
    pub fn insert<V: AsRef<str>>(&mut self, name: &str, values: impl IntoIterator<Item = V>) {
        self.remove(name);
        for v in values {
            self.push(name, v.as_ref());
        }
    }

    /// Removes `name` and its values; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let at = self.span(name);
        let found = !at.is_empty();
        self.pairs.drain(at);
        found
    }

    /// The values of `name` (none when it is absent).
    pub fn get(&self, name: &str) -> Values<'_> {
        Values {
            map: self,
            range: self.span(name),
        }
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.get(name).next()
    }

    pub fn contains_key(&self, name: &str) -> bool {
        !self.span(name).is_empty()
    }

    /// Each name once, in order, with its values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Values<'_>)> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            if i >= self.pairs.len() {
                return None;
            }
            let start = i;
            let name = self.pairs[i].name;
            while i < self.pairs.len()
                && self.text[self.pairs[i].name.0..self.pairs[i].name.1]
                    == self.text[name.0..name.1]
            {
                i += 1;
            }
            Some((
                &self.text[name.0..name.1],
                Values {
                    map: self,
                    range: start..i,
                },
            ))
        })
    }

    /// Each name once, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(name, _)| name)
    }

    /// Every (name, value), names in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.pairs.len()).map(|i| (self.name(i), self.value(i)))
    }

    /// How many names.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Replaces each value for which `f(name, value)` gives a new one; how many it did.
    pub fn replace_values(&mut self, mut f: impl FnMut(&str, &str) -> Option<String>) -> usize {
        let mut n = 0;
        for i in 0..self.pairs.len() {
            if let Some(new) = f(self.name(i), self.value(i)) {
                self.pairs[i].value = self.append(&new);
                n += 1;
            }
        }
        n
    }

    /// About the bytes it holds, for memory bounds.
    pub fn footprint(&self) -> usize {
        self.text.capacity() + self.pairs.capacity() * std::mem::size_of::<Pair>()
    }

    /// After pairs were appended in any order: sorted by name, values of a name kept in
    /// the order they came.
    fn sort(&mut self) {
        let text = &self.text;
        if self
            .pairs
            .windows(2)
            .all(|w| text[w[0].name.0..w[0].name.1] <= text[w[1].name.0..w[1].name.1])
        {
            return;
        }
        self.pairs
            .sort_by(|a, b| text[a.name.0..a.name.1].cmp(&text[b.name.0..b.name.1]));
    }
}

impl MultiMap {
    /// After reading a map in which a name came more than once (each occurrence has its
    /// own copy of the name in the text): only the pairs of its last occurrence stay.
    fn keep_last_occurrences(&mut self) {
        let text = &self.text;
        let name = |p: &Pair| &text[p.name.0..p.name.1];
        let pairs = &self.pairs;
        if pairs
            .windows(2)
            .all(|w| name(&w[0]) != name(&w[1]) || w[0].name == w[1].name)
        {
            return;
        }
        let mut keep = Vec::with_capacity(pairs.len());
        let mut i = 0;
        while i < pairs.len() {
            let end = i + pairs[i..]
                .iter()
                .take_while(|p| name(p) == name(&pairs[i]))
                .count();
            let last = pairs[end - 1].name;
            keep.extend(pairs[i..end].iter().filter(|p| p.name == last));
            i = end;
        }
        self.pairs = keep;
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for MultiMap {
    /// From (name, value) pairs in any order.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut out = MultiMap::new();
        for (name, value) in iter {
            let name = out.append(name.as_ref());
            let value = out.append(value.as_ref());
            out.pairs.push(Pair { name, value });
        }
        out.sort();
        out
    }
}

impl<'a> IntoIterator for &'a MultiMap {
    type Item = (&'a str, Values<'a>);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl PartialEq for MultiMap {
    fn eq(&self, other: &Self) -> bool {
        self.pairs.len() == other.pairs.len() && self.pairs().eq(other.pairs())
    }
}

impl Eq for MultiMap {}

impl fmt::Debug for MultiMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

struct ValuesOut<'a>(Values<'a>);

impl Serialize for ValuesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in self.0.clone() {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

impl Serialize for MultiMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (name, values) in self.iter() {
            map.serialize_entry(name, &ValuesOut(values))?;
        }
        map.end()
    }
}

/// Reads one string onto the end of the text, borrowed or not.
struct StrInto<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for StrInto<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let start = self.0.len();
        self.0.push_str(v);
        Ok((start, self.0.len()))
    }
}

/// Reads a name's array of values, each a pair with the name.
struct ValuesInto<'a> {
    map: &'a mut MultiMap,
    name: (usize, usize),
}

impl<'de> DeserializeSeed<'de> for ValuesInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ValuesInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element_seed(StrInto(&mut self.map.text))? {
            self.map.pairs.push(Pair {
                name: self.name,
                value,
            });
        }
        Ok(())
    }
}

struct MapVisitor;

impl<'de> Visitor<'de> for MapVisitor {
    type Value = MultiMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of arrays of strings ({name: [values]})")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<MultiMap, A::Error> {
        let mut map = MultiMap::new();
        while let Some(name) = access.next_key_seed(StrInto(&mut map.text))? {
            access.next_value_seed(ValuesInto {
                map: &mut map,
                name,
            })?;
        }
        map.sort();
        map.keep_last_occurrences();
        Ok(map)
    }
}

impl<'de> Deserialize<'de> for MultiMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn as_btree(m: &MultiMap) -> BTreeMap<String, Vec<String>> {
        m.iter()
            .map(|(k, vs)| (k.to_owned(), vs.map(str::to_owned).collect()))
            .collect()
    }

    #[test]
    fn names_keep_byte_order_and_values_keep_arrival_order() {
        let mut m = MultiMap::new();
        for (k, v) in [("b", "1"), ("a", "x"), ("b", "2"), ("B", "up"), ("a", "y")] {
            m.push(k, v);
        }
        assert_eq!(m.keys().collect::<Vec<_>>(), ["B", "a", "b"]);
        assert_eq!(m.get("a").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(m.get("b").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(m.first("b"), Some("1"));
        assert_eq!(m.get("c").len(), 0);
        assert_eq!(m.len(), 3);
        let pairs: MultiMap = [("b", "1"), ("a", "x"), ("b", "2"), ("B", "up"), ("a", "y")]
            .into_iter()
            .collect();
        assert_eq!(pairs, m, "built from pairs in any order, the same map");
    }

    #[test]
    fn json_is_the_seeds_object_of_arrays_as_a_btree_map_writes_it() {
        let m: MultiMap = [("x-b", "2"), ("accept", "*/*"), ("x-b", "1\"q")]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, serde_json::to_string(&as_btree(&m)).unwrap());
        assert_eq!(json, r#"{"accept":["*/*"],"x-b":["2","1\"q"]}"#);
        let back: MultiMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // Read through a reader too (no borrowing), and out of order.
        let back: MultiMap =
            serde_json::from_reader(&br#"{"z":["1"],"a":[],"b":["\u00e9","2"]}"#[..]).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), ["b", "z"]);
        assert_eq!(back.get("b").collect::<Vec<_>>(), ["é", "2"]);
        // A name given twice: its last values, as a map keeps them.
        let twice: MultiMap =
            serde_json::from_str(r#"{"a":["1","2"],"b":["x"],"a":["3"]}"#).unwrap();
        assert_eq!(twice.pairs().collect::<Vec<_>>(), [("a", "3"), ("b", "x")]);
        assert!(serde_json::from_str::<MultiMap>(r#"{"a":"not a list"}"#).is_err());
        assert!(serde_json::from_str::<MultiMap>(r#"{"a":[1]}"#).is_err());
    }

    #[test]
    fn insert_remove_and_replace() {
        let mut m: MultiMap = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        m.insert("a", ["9"]);
        assert_eq!(m.get("a").collect::<Vec<_>>(), ["9"]);
        assert!(m.remove("b"));
        assert!(!m.remove("b"));
        m.push("c", "secret");
        let n = m.replace_values(|k, _| (k == "c").then(|| "[x]".to_owned()));
        assert_eq!(n, 1);
        assert_eq!(m.pairs().collect::<Vec<_>>(), [("a", "9"), ("c", "[x]")]);
        assert_eq!(format!("{m:?}"), r#"{"a": ["9"], "c": ["[x]"]}"#);
    }
}
