//! Fuzzes the nc text mode: `text::parse_line` and `text::format_response`.
//!
//! Checks:
//!
//! - `parse_line` never panics on a UTF-8 line;
//! - a parsed request survives `to_frame` → `from_frame` unchanged (text mode only makes
//!   finite floats, so `==` holds without a NaN exception);
//! - `format_response` never panics on responses built from the line (its words as rows,
//!   log summaries, error messages and server names); a refusal is one `ERR` line, rows
//!   and log entries take one line each, and the last line starts with `OK` or `ERR`;
//! - `WRITE <key> <word>`, built from the input's first 8 bytes and its alphanumeric
//!   characters, parses to a one-row batch with that key, the word a string unless it
//!   starts with a digit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_protocol::text::{format_response, parse_line, TextCommand};
use shardline_protocol::{
    ErrorCode, LogLine, Message, Request, Response, Row, ServerInfo, ShardCommit, ShardId,
    Topology, Value,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        check_line(line);
    }
    check_write(data);
});

fn check_line(line: &str) {
    let request = match parse_line(line) {
        Ok(TextCommand::Request(request)) => request,
        Ok(_) => return,
        Err(e) => return check_format(&Response::Error(ErrorCode::BadRequest(e.0)), 1),
    };
    let frame = request.to_frame(1).expect("a parsed request encodes");
    assert_eq!(
        Request::from_frame(&frame).as_ref(),
        Ok(&request),
        "{line:?} does not round-trip"
    );

    check_format(&Response::Error(ErrorCode::BadRequest(line.to_owned())), 1);
    let summary = line.to_owned();
    let log = LogLine {
        index: 1,
        term: 1,
        crc: 0,
        crc_ok: true,
        summary,
        committed: true,
    };
    check_format(&Response::Log(vec![log]), 2);
    match request {
        Request::Write(batch) => {
            let rows = batch.rows().expect("a parsed batch's rows decode");
            check_format(&Response::Rows { at: Vec::new(), rows: rows.clone() }, rows.len() + 1);
        }
        Request::Update { row, .. } => check_format(&Response::Rows { at: Vec::new(), rows: vec![row] }, 2),
        // Server names are user text: the formatter escapes control characters, so a name
        // with a newline in it cannot end an answer early or forge an OK line.
        Request::AddServers(add) => check_servers(add.servers.into_keys().collect()),
        Request::RemoveServers { servers, .. } => check_servers(servers),
        Request::ReadServer { server } => check_servers(vec![server]),
        _ => {}
    }
}

/// Formats `response`, checking that it takes `lines` lines, the last one `OK` or `ERR`.
fn check_format(response: &Response, lines: usize) {
    let text = format_response(response);
    assert_eq!(
        text.matches('\n').count(),
        lines,
        "{response:?} printed as {text:?}"
    );
    let last = text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or_default();
    assert!(
        last.starts_with("OK") || last.starts_with("ERR"),
        "{text:?}"
    );
}

fn check_servers(names: Vec<String>) {
    let servers = names
        .iter()
        .map(|name| ServerInfo {
            name: name.clone(),
            addr: name.clone(),
            healthy: true,
            last_heartbeat_ms: Some(1),
        })
        .collect();
    let count = names.len();
    check_format(
        &Response::Topology(Topology {
            version: 1,
            servers,
            ..Default::default()
        }),
        3 + count,
    );
    let commit = ShardCommit {
        shard: ShardId(1),
        term: 1,
        index: 1,
        replicas: names,
        rows: 1,
    };
    check_format(&Response::Committed(vec![commit]), 1);
}

fn check_write(data: &[u8]) {
    let Some((key, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let key = i64::from_le_bytes(*key);
    let mut word: String = String::from_utf8_lossy(rest)
        .chars()
        .filter(|c| c.is_alphanumeric())
        .take(256)
        .collect();
    if word.is_empty() {
        word.push('x');
    }
    let line = format!("WRITE {key} {word}");
    let Ok(TextCommand::Request(Request::Write(batch))) = parse_line(&line) else {
        panic!("{line:?} is not a write");
    };
    let rows = batch.rows().expect("a parsed batch's rows decode");
    let [Row { key: got, values }] = &rows[..] else {
        panic!("{line:?} gave {rows:?}")
    };
    assert_eq!(*got, key, "{line:?}");
    assert_eq!(values.len(), 1, "{line:?}");
    if !word.starts_with(|c: char| c.is_ascii_digit()) {
        assert_eq!(values[0], Value::Str(word), "{line:?}");
    }
}
