//! A writer of the MaxMind DB format, as much of it as test databases need, so that the GeoIP
//! code is tested against files the real reader opens rather than against a mock of the reader.
//!
//! The format (<https://maxmind.github.io/MaxMind-DB/>) is three parts:
//!
//! 1. a binary search tree over the 128 bits of an IPv6 address (IPv4 lives at `::/96`), each
//!    node two records of 24, 28 or 32 bits: a record below the node count is a node, equal to it
//!    means "no data", above it points into the data section;
//! 2. 16 zero bytes, then the data section: values in a typed encoding (a control byte with the
//!    type in its top 3 bits and the size in its low 5);
//! 3. the marker `\xAB\xCD\xEFMaxMind.com` and the metadata, one map in the same encoding.
//!
//! Pointers (which real databases use to share repeated keys and values) are not written: a
//! test database is small enough without them.
//!
//! An IPv4 database (`ip_version` 4, as ip-location-db's IPv4 files are) has a tree over the
//! 32 bits of an IPv4 address instead.

use std::net::IpAddr;

use ipnet::IpNet;

/// What ends the data section and starts the metadata.
const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";
/// The zero bytes between the search tree and the data section.
const DATA_SECTION_SEPARATOR: usize = 16;

/// A value of the data section.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Utf8(String),
    Double(f64),
    /// 32-bit, as ip-location-db stores coordinates.
    Float(f32),
    U16(u16),
    U32(u32),
    U64(u64),
    Bool(bool),
    Array(Vec<Value>),
    /// Entries in the order written; the format has no rule on key order.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A map from `(key, value)` pairs.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Utf8(s.to_owned())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Double(x)
    }
}

impl From<f32> for Value {
    fn from(x: f32) -> Value {
        Value::Float(x)
    }
}

impl From<u16> for Value {
    fn from(x: u16) -> Value {
        Value::U16(x)
    }
}

impl From<u32> for Value {
    fn from(x: u32) -> Value {
        Value::U32(x)
    }
}

impl From<bool> for Value {
    fn from(x: bool) -> Value {
        Value::Bool(x)
    }
}

/// How many bits each record of the search tree takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordSize {
    Bits24,
    Bits28,
    Bits32,
}

impl RecordSize {
    fn bits(self) -> u32 {
        match self {
            RecordSize::Bits24 => 24,
            RecordSize::Bits28 => 28,
            RecordSize::Bits32 => 32,
        }
    }

    /// The smallest size whose records can hold `largest`.
    fn fitting(largest: u64) -> RecordSize {
        if largest < 1 << 24 {
            RecordSize::Bits24
        } else if largest < 1 << 28 {
            RecordSize::Bits28
        } else {
            RecordSize::Bits32
        }
    }
}

/// A database being put together: IPv6 by default (IPv4 networks are stored at `::/96`, and
/// aliased at `::ffff:0:0/96` as MaxMind's own databases do), or IPv4 only.
#[derive(Clone, Debug)]
pub struct Database {
    database_type: String,
    /// English description.
    description: String,
    languages: Vec<String>,
    build_epoch: u64,
    /// Forced record size; the smallest that fits when `None`.
    record_size: Option<RecordSize>,
    /// 4 or 6.
    ip_version: u16,
    networks: Vec<(IpNet, Value)>,
}

impl Database {
    /// An empty database of `database_type` (e.g. `GeoIP2-City`), English only, built at the
    /// Unix epoch.
    pub fn new(database_type: impl Into<String>) -> Database {
        Database {
            database_type: database_type.into(),
            description: String::new(),
            languages: vec!["en".to_owned()],
            build_epoch: 0,
            record_size: None,
            ip_version: 6,
            networks: Vec::new(),
        }
    }

    pub fn description(mut self, english: impl Into<String>) -> Database {
        self.description = english.into();
        self
    }

    pub fn languages<S: Into<String>>(
        mut self,
        languages: impl IntoIterator<Item = S>,
    ) -> Database {
        self.languages = languages.into_iter().map(Into::into).collect();
        self
    }

    /// Seconds since the Unix epoch.
    pub fn build_epoch(mut self, seconds: u64) -> Database {
        self.build_epoch = seconds;
        self
    }

    /// Writes records of this size even when a smaller one would do (to test every size).
    pub fn record_size(mut self, size: RecordSize) -> Database {
        self.record_size = Some(size);
        self
    }

    /// An IPv4-only database: a tree of 32 levels, and only IPv4 networks.
    pub fn ipv4_only(mut self) -> Database {
        self.ip_version = 4;
        self
    }

    /// Maps every address in `network` to `value`.
    pub fn insert(mut self, network: IpNet, value: Value) -> Database {
        self.networks.push((network, value));
        self
    }

    /// The database file's bytes.
    ///
    /// # Panics
    /// When two networks overlap, when a network is `/0`, when an IPv4 database is given an
    /// IPv6 network, or when a forced record size is too small: test databases are written by
    /// tests, which should fail loudly.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut tree = Tree::default();
        for (index, (network, _)) in self.networks.iter().enumerate() {
            let (bits, len) = if self.ip_version == 4 {
                in_ipv4_tree(network)
            } else {
                in_ipv6_tree(network)
            };
            tree.place(bits, len, Child::Data(index), network);
        }
        if self.ip_version == 6 {
            tree.alias_ipv4_mapped();
        }

        let mut data = Vec::new();
        let offsets: Vec<usize> = self
            .networks
            .iter()
            .map(|(_, value)| {
                let offset = data.len();
                encode(&mut data, value);
                offset
            })
            .collect();

        let node_count = tree.nodes.len() as u64;
        let largest = node_count + (DATA_SECTION_SEPARATOR + data.len()) as u64;
        let record_size = self.record_size.unwrap_or(RecordSize::fitting(largest));
        assert!(
            largest < 1 << record_size.bits(),
            "{record_size:?} records cannot point {largest} bytes/nodes far"
        );
        let record = |child: &Child| -> u64 {
            match *child {
                Child::Empty => node_count,
                Child::Node(node) => node as u64,
                Child::Data(index) => node_count + (DATA_SECTION_SEPARATOR + offsets[index]) as u64,
            }
        };

        let mut out = Vec::new();
        for node in &tree.nodes {
            write_node(
                &mut out,
                record_size,
                record(&node.children[0]),
                record(&node.children[1]),
            );
        }
        out.extend_from_slice(&[0; DATA_SECTION_SEPARATOR]);
        out.extend_from_slice(&data);
        out.extend_from_slice(METADATA_MARKER);
        encode(&mut out, &self.metadata(node_count, record_size));
        out
    }

    fn metadata(&self, node_count: u64, record_size: RecordSize) -> Value {
        let node_count = u32::try_from(node_count).expect("a test database has few nodes");
        Value::map([
            ("binary_format_major_version", Value::U16(2)),
            ("binary_format_minor_version", Value::U16(0)),
            ("build_epoch", Value::U64(self.build_epoch)),
            ("database_type", Value::from(self.database_type.as_str())),
            (
                "description",
                Value::map([("en", Value::from(self.description.as_str()))]),
            ),
            ("ip_version", Value::U16(self.ip_version)),
            (
                "languages",
                Value::Array(
                    self.languages
                        .iter()
                        .map(|l| Value::from(l.as_str()))
                        .collect(),
                ),
            ),
            ("node_count", Value::U32(node_count)),
            (
                "record_size",
                Value::U16(u16::try_from(record_size.bits()).expect("24, 28 or 32")),
            ),
        ])
    }
}

/// The network's first address as 128 bits and its prefix length in the IPv6 tree.
fn in_ipv6_tree(network: &IpNet) -> (u128, u32) {
    match network.network() {
        IpAddr::V4(a) => (
            u128::from(u32::from(a)),
            96 + u32::from(network.prefix_len()),
        ),
        IpAddr::V6(a) => (u128::from(a), u32::from(network.prefix_len())),
    }
}

/// In an IPv4 tree: the network's first address in the top 32 bits, and its prefix length.
fn in_ipv4_tree(network: &IpNet) -> (u128, u32) {
    match network {
        IpNet::V4(v4) => (
            u128::from(u32::from(v4.network())) << 96,
            u32::from(v4.prefix_len()),
        ),
        IpNet::V6(_) => panic!("{network}: an IPv4 database holds only IPv4 networks"),
    }
}

/// One side of a node.
#[derive(Clone, Copy, Debug)]
enum Child {
    Empty,
    Node(usize),
    /// The index of a network (and its value).
    Data(usize),
}

#[derive(Debug)]
struct Node {
    /// For a 0 bit, then for a 1 bit.
    children: [Child; 2],
}

#[derive(Debug)]
struct Tree {
    /// The root is node 0; a record names a node by its index here.
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Tree {
        Tree {
            nodes: vec![Node {
                children: [Child::Empty; 2],
            }],
        }
    }
}

impl Tree {
    /// Puts `child` where the first `len` bits of `bits` lead, making the nodes on the way.
    fn place(&mut self, bits: u128, len: u32, child: Child, what: &dyn std::fmt::Display) {
        assert!(
            len > 0,
            "{what}: a test database cannot map the whole address space"
        );
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            let slot = self.nodes[node].children[bit];
            if depth == len - 1 {
                assert!(
                    matches!(slot, Child::Empty),
                    "{what} overlaps a network already in the database"
                );
                self.nodes[node].children[bit] = child;
                return;
            }
            node = match slot {
                Child::Node(next) => next,
                Child::Empty => {
                    self.nodes.push(Node {
                        children: [Child::Empty; 2],
                    });
                    let next = self.nodes.len() - 1;
                    self.nodes[node].children[bit] = Child::Node(next);
                    next
                }
                Child::Data(_) => panic!("{what} lies inside a network already in the database"),
            };
        }
    }

    /// Makes `::ffff:0:0/96` lead to the same subtree as `::/96`, so that IPv4-mapped IPv6
    /// addresses find the IPv4 networks, as in MaxMind's databases.
    fn alias_ipv4_mapped(&mut self) {
        let mut child = Child::Node(0);
        for _ in 0..96 {
            let Child::Node(node) = child else {
                return;
            };
            child = self.nodes[node].children[0];
        }
        if let Child::Node(_) = child {
            let mapped = 0xffff_u128 << 32;
            self.place(mapped, 96, child, &"::ffff:0:0/96");
        }
    }
}

/// Appends one node: the left (0) record, then the right (1) record.
fn write_node(out: &mut Vec<u8>, size: RecordSize, left: u64, right: u64) {
    let be = |x: u64| (x as u32).to_be_bytes();
    match size {
        RecordSize::Bits24 => {
            out.extend_from_slice(&be(left)[1..]);
            out.extend_from_slice(&be(right)[1..]);
        }
        RecordSize::Bits28 => {
            // The middle byte holds the top 4 bits of each record: the left's in its high nibble.
            out.extend_from_slice(&be(left)[1..]);
            out.push((((left >> 24) & 0x0f) << 4 | ((right >> 24) & 0x0f)) as u8);
            out.extend_from_slice(&be(right)[1..]);
        }
        RecordSize::Bits32 => {
            out.extend_from_slice(&be(left));
            out.extend_from_slice(&be(right));
        }
    }
}

/// Type numbers of the data section; above 7 they are "extended" and take a second byte.
mod kind {
    pub const UTF8: u8 = 2;
    pub const DOUBLE: u8 = 3;
    pub const U16: u8 = 5;
    pub const U32: u8 = 6;
    pub const MAP: u8 = 7;
    pub const U64: u8 = 9;
    pub const ARRAY: u8 = 11;
    pub const BOOL: u8 = 14;
    pub const FLOAT: u8 = 15;
}

/// Appends `value` in the data section's encoding.
fn encode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Utf8(s) => {
            control(out, kind::UTF8, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Double(x) => {
            control(out, kind::DOUBLE, 8);
            out.extend_from_slice(&x.to_be_bytes());
        }
        Value::Float(x) => {
            control(out, kind::FLOAT, 4);
            out.extend_from_slice(&x.to_be_bytes());
        }
        Value::U16(x) => unsigned(out, kind::U16, u64::from(*x)),
        Value::U32(x) => unsigned(out, kind::U32, u64::from(*x)),
        Value::U64(x) => unsigned(out, kind::U64, *x),
        // A boolean is all size: 0 or 1, with no payload.
        Value::Bool(b) => control(out, kind::BOOL, usize::from(*b)),
        Value::Array(items) => {
            control(out, kind::ARRAY, items.len());
            for item in items {
                encode(out, item);
            }
        }
        Value::Map(entries) => {
            control(out, kind::MAP, entries.len());
            for (key, value) in entries {
                control(out, kind::UTF8, key.len());
                out.extend_from_slice(key.as_bytes());
                encode(out, value);
            }
        }
    }
}

/// Unsigned integers are big-endian without leading zero bytes; the size says how many remain.
fn unsigned(out: &mut Vec<u8>, kind: u8, x: u64) {
    let bytes = x.to_be_bytes();
    let significant = &bytes[(x.leading_zeros() / 8) as usize..];
    control(out, kind, significant.len());
    out.extend_from_slice(significant);
}

/// The control byte (and extended type byte) and the size, with its extra bytes past 28.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, Vec::new()),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => {
            let rest = u32::try_from(size - 65_821).expect("a test value is not that large");
            (31, rest.to_be_bytes()[1..].to_vec())
        }
    };
    if kind <= 7 {
        out.push(kind << 5 | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend_from_slice(&extra);
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use maxminddb::Reader;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Record {
        name: String,
        score: f64,
        ratio: f32,
        small: u16,
        count: u32,
        big: u64,
        flag: bool,
        tags: Vec<String>,
    }

    fn record(name: &str) -> Value {
        Value::map([
            ("name", Value::from(name)),
            ("score", Value::from(1.5)),
            ("ratio", Value::from(0.25_f32)),
            ("small", Value::from(0_u16)),
            ("count", Value::from(70_000_u32)),
            ("big", Value::U64(1 << 40)),
            ("flag", Value::from(true)),
            ("tags", Value::Array(vec!["a".into(), "b".into()])),
        ])
    }

    fn database(size: Option<RecordSize>) -> Vec<u8> {
        let mut db = Database::new("Test-Records")
            .description("records of every type")
            .build_epoch(1_800_000_000)
            .insert("192.0.2.0/24".parse().unwrap(), record("v4"))
            .insert("2001:db8::/32".parse().unwrap(), record("v6"));
        if let Some(size) = size {
            db = db.record_size(size);
        }
        db.to_bytes()
    }

    fn name_at(reader: &Reader<Vec<u8>>, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.parse().unwrap();
        let found: Option<Record> = reader.lookup(ip).unwrap().decode().unwrap();
        found.map(|r| r.name)
    }

    #[test]
    fn every_record_size_reads_back_with_the_real_reader() {
        for size in [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32] {
            let reader = Reader::from_source(database(Some(size))).unwrap();
            reader.verify().unwrap();
            assert_eq!(u32::from(reader.metadata().record_size), size.bits());
            assert_eq!(
                name_at(&reader, "192.0.2.77").as_deref(),
                Some("v4"),
                "{size:?}"
            );
            assert_eq!(name_at(&reader, "2001:db8:1::5").as_deref(), Some("v6"));
            assert_eq!(name_at(&reader, "::ffff:192.0.2.1").as_deref(), Some("v4"));
            assert_eq!(name_at(&reader, "192.0.3.1"), None);
            assert_eq!(name_at(&reader, "2001:db9::1"), None);
        }
    }

    #[test]
    fn every_value_type_decodes_to_what_was_written() {
        let reader = Reader::from_source(database(None)).unwrap();
        let found: Record = reader
            .lookup("192.0.2.1".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(
            found,
            Record {
                name: "v4".into(),
                score: 1.5,
                ratio: 0.25,
                small: 0,
                count: 70_000,
                big: 1 << 40,
                flag: true,
                tags: vec!["a".into(), "b".into()],
            }
        );
    }

    #[test]
    fn the_metadata_says_what_the_database_is() {
        let reader = Reader::from_source(database(None)).unwrap();
        let metadata = reader.metadata();
        assert_eq!(metadata.database_type, "Test-Records");
        assert_eq!(metadata.build_epoch, 1_800_000_000);
        assert_eq!(metadata.ip_version, 6);
        assert_eq!(metadata.languages, ["en"]);
        assert_eq!(metadata.description["en"], "records of every type");
    }

    #[test]
    fn long_strings_take_the_extended_size_forms() {
        for len in [28, 29, 284, 285, 65_820, 65_821, 70_000] {
            let text = "x".repeat(len);
            let bytes = Database::new("Test")
                .insert(
                    "10.0.0.0/8".parse().unwrap(),
                    Value::map([("name", Value::from(text.as_str()))]),
                )
                .to_bytes();
            let reader = Reader::from_source(bytes).unwrap();
            #[derive(Deserialize)]
            struct Named {
                name: String,
            }
            let found: Named = reader
                .lookup("10.1.2.3".parse().unwrap())
                .unwrap()
                .decode()
                .unwrap()
                .unwrap();
            assert_eq!(found.name.len(), len);
        }
    }

    #[test]
    fn an_ipv4_database_reads_back_with_the_real_reader() {
        for size in [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32] {
            let bytes = Database::new("Test-IPv4")
                .ipv4_only()
                .record_size(size)
                .insert("192.0.2.0/24".parse().unwrap(), record("v4"))
                .insert("198.51.100.128/25".parse().unwrap(), record("high"))
                .to_bytes();
            let reader = Reader::from_source(bytes).unwrap();
            reader.verify().unwrap();
            assert_eq!(reader.metadata().ip_version, 4);
            assert_eq!(name_at(&reader, "192.0.2.200").as_deref(), Some("v4"));
            assert_eq!(name_at(&reader, "198.51.100.255").as_deref(), Some("high"));
            assert_eq!(name_at(&reader, "198.51.100.127"), None);
            assert!(reader.lookup("2001:db8::1".parse().unwrap()).is_err());
        }
    }

    #[test]
    #[should_panic(expected = "holds only IPv4 networks")]
    fn an_ipv4_database_refuses_an_ipv6_network() {
        Database::new("Test")
            .ipv4_only()
            .insert("2001:db8::/32".parse().unwrap(), Value::from(true))
            .to_bytes();
    }

    #[test]
    #[should_panic(expected = "already in the database")]
    fn a_network_inside_another_is_refused() {
        Database::new("Test")
            .insert("10.0.0.0/8".parse().unwrap(), Value::from(true))
            .insert("10.0.0.0/16".parse().unwrap(), Value::from(false))
            .to_bytes();
    }

    #[test]
    #[should_panic(expected = "already in the database")]
    fn a_network_around_another_is_refused() {
        Database::new("Test")
            .insert("10.0.0.0/16".parse().unwrap(), Value::from(true))
            .insert("10.0.0.0/8".parse().unwrap(), Value::from(false))
            .to_bytes();
    }
}
