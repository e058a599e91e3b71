//! The TOML file given by `--config`, applied under the environment and
//! the command line.
//!
//! The file is applied by turning its keys into flags placed *before* the
//! real command line (clap lets a later flag override an earlier one), and
//! skipping keys whose environment variable is set. So one parser, with one
//! set of validation rules and one `--help`, serves all three sources.

use std::{ffi::OsString, path::PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};

use super::Cli;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: unknown option '{key}'")]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "{path}: option '{key}' has an unsupported value (use a string, number, boolean or a list of them)"
    )]
    BadValue { path: PathBuf, key: String },
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Parses the command line `args` (program name first) with the file named
/// by `--config`/`LB_CONFIG` applied underneath it.
pub fn parse<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = Cli::try_parse_from(&args)?;
    let Some(path) = first
        .config
        .config
        .clone()
        .filter(|_| first.command.is_none())
    else {
        return Ok(first);
    };
    let file_args = file_args(&path)?;
    let mut merged = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args.into_iter().map(OsString::from));
    merged.extend(args.into_iter().skip(1));
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The file's options as flags, leaving out those the environment sets.
fn file_args(path: &PathBuf) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    toml_args(&text, path, |env| std::env::var_os(env).is_some())
}

/// The options of the TOML `text` (read from `path`) as flags, leaving out
/// those whose environment variable `env_set` says is set. Pure: the
/// fuzzers call it through [`parse_toml`].
fn toml_args(
    text: &str,
    path: &std::path::Path,
    env_set: impl Fn(&str) -> bool,
) -> Result<Vec<String>, ConfigError> {
    let path = path.to_path_buf();
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.clone(),
        source,
    })?;
    let command = Cli::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
            })?;
        if arg
            .get_env()
            .and_then(|env| env.to_str())
            .is_some_and(&env_set)
        {
            continue;
        }
        let bad = || ConfigError::BadValue {
            path: path.clone(),
            key: key.clone(),
        };
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        match &value {
            toml::Value::Array(items) => {
                for item in items {
                    out.push(format!("--{flag}={}", scalar(item).ok_or_else(bad)?));
                }
            }
            v => out.push(format!("--{flag}={}", scalar(v).ok_or_else(bad)?)),
        }
    }
    Ok(out)
}

/// The configuration a TOML file `text` gives with no flags and no
/// environment: what `--config` does, without the file system.
pub fn parse_toml(text: &str) -> Result<Cli, ConfigError> {
    let args = toml_args(text, std::path::Path::new("<toml>"), |_| false)?;
    let mut command = Cli::command();
    let matches =
        command.try_get_matches_from_mut(std::iter::once("balancer".to_owned()).chain(args))?;
    Ok(Cli::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn file_values_sit_under_flags() {
        let dir = std::env::temp_dir().join(format!("lb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("lb.toml");
        std::fs::write(&path, "replicas = 5\npolicy = \"round-robin\"\nhealth_interval = \"1s\"\nweight = [\"a=2\", \"b=3\"]\n")
            .expect("write");
        let cli = parse([
            "balancer",
            "--config",
            path.to_str().expect("utf8"),
            "--replicas",
            "4",
        ])
        .expect("parses");
        assert_eq!(cli.config.replicas, 4, "the flag wins");
        assert_eq!(cli.config.policy, "round-robin", "the file fills in");
        assert_eq!(cli.config.health_interval, Duration::from_secs(1));
        assert_eq!(cli.config.weights().expect("weights").get("b"), Some(&3));

        std::fs::write(&path, "replicaz = 5\n").expect("write");
        let err =
            parse(["balancer", "--config", path.to_str().expect("utf8")]).expect_err("unknown key");
        assert!(err.to_string().contains("replicaz"), "{err}");
    }
}
