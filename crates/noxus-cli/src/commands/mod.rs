//! The commands that talk to the platform through the SDK.

pub mod audit;
pub mod auth;
pub mod keys;
pub mod models;
pub mod runs;
pub mod scan;
pub mod workflows;
pub mod workspaces;

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::Failure;

/// What every command gets.
#[derive(Debug)]
pub struct Context {
    /// The SDK client, configured from flags, environment and `.env`.
    pub client: noxus_sdk::Client,
}

/// Asks `question` on a terminal; without one, `--yes` is required.
pub fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::config(anyhow::anyhow!(
            "{question} — not a terminal, so pass --yes to confirm"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::other(e.into()))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::other(anyhow::anyhow!("cancelled")))
    }
}

/// Parses `0`, `90s`, `30m`, `1h`, `24h`, `7d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 0, 30m, 1h, 24h or 7d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use s, m, h or d"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1h").is_err());
    }
}
