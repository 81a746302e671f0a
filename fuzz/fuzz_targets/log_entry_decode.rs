//! Fuzzes `LogEntry::decode`.
//!
//! The input is decoded as given (which exercises truncation, length and CRC checks), and
//! resealed: with its length and CRC fields set to match, so that almost every input of 24
//! bytes or more reaches the operation decoder. For every record that decodes:
//!
//! - `verify` agrees with `decode` on (term, index);
//! - `entry.encode()` is at most as long as the record, and exactly the record's bytes when
//!   it is as long (postcard accepts overlong varints, so a record can be a longer spelling
//!   of its entry, but never another one of the same length; bytes after the operation are
//!   refused);
//! - the canonical encoding decodes to an equal entry (compared by its encoding, so NaN is
//!   fine, and with `==` when it holds no NaN).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_protocol::log_entry::{self, ENTRY_HEADER_LEN, ENTRY_OFF_CRC, ENTRY_OFF_LEN};
use shardline_protocol::LogEntry;

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&reseal(data));
});

fn check(record: &[u8]) {
    let Ok(entry) = LogEntry::decode(record) else {
        return;
    };
    assert_eq!(log_entry::verify(record), Ok((entry.term, entry.index)));
    let canonical = entry.encode().expect("a decoded entry re-encodes");
    assert!(
        canonical.len() <= record.len(),
        "{entry:?} re-encodes longer than its record"
    );
    if canonical.len() == record.len() {
        assert_eq!(
            &canonical[..],
            record,
            "{entry:?} has two encodings of the same length"
        );
    }
    let back = LogEntry::decode(&canonical).expect("a re-encoded entry decodes");
    assert_eq!(
        back.encode().expect("a decoded entry re-encodes"),
        canonical
    );
    if !format!("{entry:?}").contains("NaN") {
        assert_eq!(back, entry);
    }
}

/// `data` with the length and CRC fields rewritten to match the rest.
fn reseal(data: &[u8]) -> Vec<u8> {
    let mut record = data.to_vec();
    if record.len() >= ENTRY_HEADER_LEN {
        let len = (record.len() - ENTRY_HEADER_LEN) as u32;
        record[ENTRY_OFF_LEN..ENTRY_OFF_LEN + 4].copy_from_slice(&len.to_be_bytes());
        let crc = crc32fast::hash(&record[ENTRY_OFF_LEN..]);
        record[ENTRY_OFF_CRC..ENTRY_OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    record
}
