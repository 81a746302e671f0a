//! The text mode's parser, case by case from `tests/testdata/text/` (the `datadriven`
//! format raft-rs uses; `REWRITE=1 cargo test -p shardline-protocol --test text_cases`
//! writes the answers the code gives now, to be read over before committing).
//!
//! `parse` takes one line of input each and answers what it parses to, or `error:` and
//! the explanation a person at `nc` would read.

use shardline_protocol::text::{parse_line, TextCommand};
use shardline_protocol::Request;

#[test]
fn text_cases() {
    datadriven::walk("tests/testdata/text", |f| {
        f.run(|case| {
            assert_eq!(case.directive, "parse", "the only directive is `parse`");
            case.input.lines().map(|line| format!("{line} -> {}\n", describe(parse_line(line)))).collect::<String>()
        });
    });
}

/// A parsed line as a person would read it: requests as their debug form, except a write
/// batch, whose rows are shown decoded rather than as bytes.
fn describe(parsed: Result<TextCommand, shardline_protocol::text::TextError>) -> String {
    match parsed {
        Err(e) => format!("error: {e}"),
        Ok(TextCommand::Request(Request::Write(batch))) => match batch.rows() {
            Ok(rows) => format!("Write(client {} seq {}) {rows:?}", batch.client_id(), batch.seq()),
            Err(e) => format!("Write(undecodable: {e})"),
        },
        Ok(TextCommand::Request(request)) => format!("{request:?}"),
        Ok(other) => format!("{other:?}"),
    }
}
