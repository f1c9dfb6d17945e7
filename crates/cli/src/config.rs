//! Configuration files for `lsp run` and `client run`: a TOML file of the run's own options
//! (`listen = "127.0.0.1:9735"`, `min-clients = 8`, `no-passphrase = true`...), read from
//! `--config FILE` or, when present, `<datadir>/superscalar.toml`. An option given on the
//! command line wins over the file; an option the command does not know is refused by it as on
//! the command line.

use std::ffi::OsString;
use std::path::PathBuf;

/// The file read when `--config` is not given.
pub const DEFAULT_FILE: &str = "superscalar.toml";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML, or holds a value that is not a string, a number or a boolean.
    #[error("config file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn value_of(args: &[OsString], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        if a == flag {
            args.get(i + 1).and_then(|v| v.to_str()).map(str::to_owned)
        } else {
            a.strip_prefix(&eq).map(str::to_owned)
        }
    })
}

fn has_flag(args: &[OsString], flag: &str) -> bool {
    let eq = format!("{flag}=");
    args.iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&eq))
}

/// `args` (the whole command line) with the options of the run's configuration file added
/// where the command line does not give them; unchanged for other commands.
pub fn apply(args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .take(2)
        .collect();
    if !matches!(words.as_slice(), ["lsp", "run"] | ["client", "run"]) {
        return Ok(args);
    }
    let path = match value_of(&args, "--config") {
        Some(p) => PathBuf::from(p),
        None => match value_of(&args, "--datadir") {
            Some(d) if PathBuf::from(&d).join(DEFAULT_FILE).is_file() => {
                PathBuf::from(d).join(DEFAULT_FILE)
            }
            _ => return Ok(args),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: path.clone(),
            reason: e.message().to_owned(),
        })?;
    let mut out = args;
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        if flag == "--config" || has_flag(&out, &flag) {
            continue;
        }
        match value {
            toml::Value::Boolean(true) => out.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => {
                out.push(flag.into());
                out.push(s.into());
            }
            toml::Value::Integer(i) => {
                out.push(flag.into());
                out.push(i.to_string().into());
            }
            other => {
                return Err(ConfigError::Invalid {
                    path,
                    reason: format!("{key}: a {} is not an option's value", other.type_str()),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "min_clients = 3\nlisten = \"127.0.0.1:1\"\nno-passphrase = true\njson = false\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let got = apply(args(&[
            "ss",
            "lsp",
            "run",
            "--config",
            f,
            "--listen=1.2.3.4:5",
        ]))
        .unwrap();
        let got: Vec<&str> = got.iter().map(|a| a.to_str().unwrap()).collect();
        assert!(got.contains(&"--min-clients") && got.contains(&"3"));
        assert!(got.contains(&"--no-passphrase"));
        assert!(
            !got.contains(&"127.0.0.1:1"),
            "the command line wins: {got:?}"
        );
        assert!(!got.contains(&"--json"));
        // Other commands are left alone.
        let other = args(&["ss", "lsp", "status", "--config", f]);
        assert_eq!(apply(other.clone()).unwrap(), other);
    }

    #[test]
    fn the_default_file_is_read_from_the_datadir_and_bad_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            apply(args(&["ss", "client", "run", "--datadir", d]))
                .unwrap()
                .len(),
            5
        );
        std::fs::write(dir.path().join(DEFAULT_FILE), "capacity-sat = 20000\n").unwrap();
        assert_eq!(
            apply(args(&["ss", "client", "run", "--datadir", d]))
                .unwrap()
                .len(),
            7
        );
        std::fs::write(dir.path().join(DEFAULT_FILE), "capacity-sat = [1]\n").unwrap();
        assert!(matches!(
            apply(args(&["ss", "client", "run", "--datadir", d])),
            Err(ConfigError::Invalid { .. })
        ));
        std::fs::write(dir.path().join(DEFAULT_FILE), "= nonsense").unwrap();
        assert!(apply(args(&["ss", "client", "run", "--datadir", d])).is_err());
        let missing = dir.path().join("none.toml");
        assert!(matches!(
            apply(args(&[
                "ss",
                "client",
                "run",
                "--config",
                missing.to_str().unwrap()
            ])),
            Err(ConfigError::Read { .. })
        ));
    }
}
