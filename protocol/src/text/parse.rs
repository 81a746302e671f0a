//! Lines → requests.

use std::collections::BTreeMap;

use crate::batch::WriteBatch;
use crate::consistency::{Consistency, ShardPosition};
use crate::message::{AddServersRequest, Request, Secret};
use crate::model::{Row, ShardId, Value};

/// Longest line accepted, in bytes; longer ones are an error, not a buffer that grows.
pub const MAX_LINE: usize = 64 * 1024;

/// What a line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum TextCommand {
    /// `HELP`: answered by the text layer itself.
    Help,
    /// `QUIT`: close the connection.
    Quit,
    /// An empty line: nothing to do.
    Empty,
    /// A request, as the binary protocol would carry it.
    Request(Request),
}

/// A malformed line, with a one-line explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TextError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, TextError> {
    Err(TextError(msg.into()))
}

/// Parses one line (without its line ending).
pub fn parse_line(line: &str) -> Result<TextCommand, TextError> {
    if line.len() > MAX_LINE {
        return err(format!("line of {} bytes is over the {MAX_LINE}-byte limit", line.len()));
    }
    let tokens = tokenize(line)?;
    let Some((command, args)) = tokens.split_first() else {
        return Ok(TextCommand::Empty);
    };
    let request = match command.text.to_ascii_uppercase().as_str() {
        "HELP" | "?" => return Ok(TextCommand::Help),
        "QUIT" | "EXIT" => return Ok(TextCommand::Quit),
        "PING" => no_args("PING", args, Request::Ping)?,
        "STATUS" => no_args("STATUS", args, Request::Status)?,
        "AUTH" => match args {
            [user, secret] => Request::Auth { user: user.text.clone(), secret: Secret(secret.text.clone()) },
            _ => return err("usage: AUTH <user> <secret>, e.g. AUTH app s3cret"),
        },
        "STATS" => no_args("STATS", args, Request::Stats)?,
        "READ" => parse_read(args)?,
        "READSERVER" | "READ-SERVER" => match args {
            [name] => Request::ReadServer { server: name.text.clone() },
            _ => return err("usage: READSERVER <server name>, e.g. READSERVER Server0"),
        },
        "WRITE" | "INSERT" => {
            let row = parse_row("WRITE", args)?;
            let batch = WriteBatch::encode(0, 0, &[row]).map_err(|e| TextError(e.to_string()))?;
            Request::Write(batch)
        }
        "UPDATE" => Request::Update { client_id: 0, seq: 0, row: parse_row("UPDATE", args)? },
        "DEL" | "DELETE" => match args {
            [key] => Request::Delete { client_id: 0, seq: 0, key: int(key, "DEL", "key")? },
            _ => return err("usage: DEL <key>, e.g. DEL 101"),
        },
        "LOG" => parse_log(args)?,
        "ADD" => parse_add(args)?,
        "RM" | "REMOVE" => parse_rm(args)?,
        "FAILOVER" | "SWITCHOVER" => parse_failover(args)?,
        other => return err(format!("unknown command `{other}`; try HELP")),
    };
    Ok(TextCommand::Request(request))
}

fn no_args(name: &str, args: &[Token], request: Request) -> Result<Request, TextError> {
    if args.is_empty() {
        Ok(request)
    } else {
        err(format!("{name} takes no arguments"))
    }
}

fn parse_read(args: &[Token]) -> Result<Request, TextError> {
    const USAGE: &str = "usage: READ <low> <high> [ANY | PRIMARY | BOUNDED <ms> | BOUNDED <n>E | SESSION \
                         [sh1=45,sh2=12]], e.g. READ 100 200 BOUNDED 100";
    let (low, high, level) = match args {
        [low, high, level @ ..] => (low, high, level),
        _ => return err(USAGE),
    };
    let consistency = match level {
        [] => Consistency::Any,
        [one] if one.text.eq_ignore_ascii_case("session") => Consistency::Session { positions: Vec::new() },
        [one] => one.text.parse().map_err(|_| TextError(USAGE.into()))?,
        [kind, bound] if kind.text.eq_ignore_ascii_case("bounded") => {
            let bound = bound.text.to_ascii_lowercase();
            let form = if bound.ends_with('e') || bound.ends_with("ms") { bound } else { format!("{bound}ms") };
            format!("bounded:{form}").parse().map_err(|_| TextError(USAGE.into()))?
        }
        [kind, token] if kind.text.eq_ignore_ascii_case("session") => {
            Consistency::Session { positions: parse_positions(&token.text).ok_or_else(|| TextError(USAGE.into()))? }
        }
        _ => return err(USAGE),
    };
    let (low, high) = (int(low, "READ", "low")?, int(high, "READ", "high")?);
    if low > high {
        return err(format!("READ: low {low} is above high {high}"));
    }
    Ok(Request::Read { low, high, consistency })
}

/// `sh1=45,sh2=12`: per shard, the applied index a session read must see (term 0: the
/// text mode carries indexes only, which is all a replica compares).
fn parse_positions(text: &str) -> Option<Vec<ShardPosition>> {
    text.split(',')
        .map(|part| {
            let (shard, index) = part.split_once('=')?;
            Some(ShardPosition { shard: ShardId::parse(shard)?, term: 0, index: index.parse().ok()? })
        })
        .collect()
}

fn parse_row(command: &str, args: &[Token]) -> Result<Row, TextError> {
    let Some((key, values)) = args.split_first() else {
        return err(format!("usage: {command} <key> <values…>, e.g. {command} 101 alice 77"));
    };
    let key = int(key, command, "key")?;
    Ok(Row::new(key, values.iter().map(Token::value).collect()))
}

fn parse_log(args: &[Token]) -> Result<Request, TextError> {
    const USAGE: &str = "usage: LOG <shard> [count], e.g. LOG sh1 20";
    let (shard, count) = match args {
        [shard] => (shard, 20),
        [shard, count] => (shard, count.text.parse().map_err(|_| TextError(USAGE.into()))?),
        _ => return err(USAGE),
    };
    let shard = ShardId::parse(&shard.text).ok_or_else(|| TextError(USAGE.into()))?;
    Ok(Request::Log { shard, count })
}

fn parse_add(args: &[Token]) -> Result<Request, TextError> {
    const USAGE: &str = "usage: ADD <server>:<shard>[,<shard>…] …, e.g. ADD Server6:sh1,sh2";
    if args.is_empty() {
        return err(USAGE);
    }
    let mut servers = BTreeMap::new();
    for arg in args {
        let (name, shards) = arg.text.split_once(':').ok_or_else(|| TextError(USAGE.into()))?;
        let shards = shards
            .split(',')
            .map(|s| ShardId::parse(s).ok_or_else(|| TextError(format!("ADD: bad shard `{s}`"))))
            .collect::<Result<Vec<_>, _>>()?;
        if name.is_empty() || servers.insert(name.to_owned(), shards).is_some() {
            return err(format!("ADD: bad or repeated server name `{name}`"));
        }
    }
    Ok(Request::AddServers(AddServersRequest { n: servers.len(), new_shards: vec![], servers }))
}

fn parse_failover(args: &[Token]) -> Result<Request, TextError> {
    const USAGE: &str = "usage: FAILOVER <shard> [server], e.g. FAILOVER sh1 Server2";
    let (shard, to) = match args {
        [shard] => (shard, None),
        [shard, to] => (shard, Some(to.text.clone())),
        _ => return err(USAGE),
    };
    let shard =
        ShardId::parse(&shard.text).ok_or_else(|| TextError(format!("FAILOVER: bad shard `{}`", shard.text)))?;
    Ok(Request::Failover { shard, to })
}

fn parse_rm(args: &[Token]) -> Result<Request, TextError> {
    const USAGE: &str = "usage: RM <n> [server…], e.g. RM 1 Server3";
    let Some((n, names)) = args.split_first() else {
        return err(USAGE);
    };
    let n: usize = n.text.parse().map_err(|_| TextError(USAGE.into()))?;
    if n < names.len() {
        return err(format!("RM: n = {n} is less than the {} servers named", names.len()));
    }
    Ok(Request::RemoveServers { n, servers: names.iter().map(|t| t.text.clone()).collect() })
}

fn int(token: &Token, command: &str, what: &str) -> Result<i64, TextError> {
    if token.quoted {
        return err(format!("{command}: {what} must be an integer, got a quoted string"));
    }
    token.text.parse().map_err(|_| TextError(format!("{command}: {what} must be an integer, got `{}`", token.text)))
}

/// One word of a line; quoted words are always strings.
#[derive(Debug)]
struct Token {
    text: String,
    quoted: bool,
}

impl Token {
    fn value(&self) -> Value {
        if self.quoted {
            return Value::Str(self.text.clone());
        }
        if let Ok(i) = self.text.parse::<i64>() {
            return Value::Int(i);
        }
        let numeric_start = self.text.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
        match self.text.parse::<f64>() {
            Ok(x) if numeric_start && x.is_finite() => Value::Float(x),
            _ => Value::Str(self.text.clone()),
        }
    }
}

fn tokenize(line: &str) -> Result<Vec<Token>, TextError> {
    let mut tokens = Vec::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut text = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => text.push(e),
                        Some('n') => text.push('\n'),
                        Some('t') => text.push('\t'),
                        _ => return err("bad escape in quoted string (use \\\" \\\\ \\n \\t)"),
                    },
                    Some(c) => text.push(c),
                    None => return err("unterminated quoted string"),
                }
            }
            tokens.push(Token { text, quoted: true });
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                text.push(c);
                chars.next();
            }
            tokens.push(Token { text, quoted: false });
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    // What each line parses to, and each malformed line's explanation, is read from
    // `protocol/tests/testdata/text/` by `tests/text_cases.rs`.

    #[test]
    fn blank_lines_are_nothing_to_do() {
        assert_eq!(parse_line("   "), Ok(TextCommand::Empty));
        assert_eq!(parse_line(""), Ok(TextCommand::Empty));
    }

    #[test]
    fn overlong_lines_are_refused() {
        let line = "WRITE 1 ".to_owned() + &"x".repeat(MAX_LINE);
        assert!(parse_line(&line).unwrap_err().0.contains("limit"));
    }
}
