//! What the command-line programs built on this crate (`shardline`, `shardline-bench`)
//! share: how a bad command line is answered.

use std::process::ExitCode;

/// Parses the command line as `C`; on `--help` or `--version` prints it and gives
/// `Err(SUCCESS)`, on a bad argument prints its first line with a pointer to `--help` and
/// gives `Err(2)` (the exit code scripts expect for a usage error).
pub fn parse_or_exit<C: clap::Parser>(program: &str) -> Result<C, ExitCode> {
    match C::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("{first} (see {program} --help)");
            Err(ExitCode::from(2))
        }
    }
}
