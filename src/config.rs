//! The config file: `--config FILE` (or `RUNNEL_CONFIG`) gives a command's options in TOML,
//! one section per command, keys named as the long flags:
//!
//! ```toml
//! [run]
//! source = "kafka:broker-1:9092,broker-2:9092"
//! group = "analytics"
//! sink = ["elasticsearch:https://es:9200", "ndjson:/var/lib/runnel/out"]
//! kafka-option = ["security.protocol=SASL_SSL", "sasl.mechanism=PLAIN"]
//! es-user = "runnel"
//! until-drained = false
//! ```
//!
//! Precedence: flags on the command line, then environment variables, then the file, then
//! defaults. `[repl]` falls back to `[run]` for the options they share. Unknown keys are
//! errors that name the file, the section and the key.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const SUBCOMMANDS: [&str; 5] = ["run", "generate", "check", "repl", "broker"];

/// The config file named by `--config FILE`, `--config=FILE` or `RUNNEL_CONFIG`, and the
/// arguments without `--config`.
fn take_config_flag(args: &[String]) -> (Option<PathBuf>, Vec<String>) {
    let mut out = Vec::with_capacity(args.len());
    let mut path = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--config" && i + 1 < args.len() {
            path = Some(PathBuf::from(&args[i + 1]));
            i += 2;
            continue;
        }
        if let Some(p) = a.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
        } else {
            out.push(a.clone());
        }
        i += 1;
    }
    let path = path.or_else(|| std::env::var_os("RUNNEL_CONFIG").map(PathBuf::from));
    (path, out)
}

/// Expands the config file into command-line arguments for `cli` (the whole program's clap
/// command). Returns `args` unchanged when there is no config file.
pub fn expand_args(args: Vec<String>, cli: &clap::Command) -> Result<Vec<String>> {
    let (path, mut args) = take_config_flag(&args);
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| Error::Schema {
        path: path.clone(),
        message: e.to_string(),
    })?;
    // The subcommand: the first argument naming one; none means `run`.
    let pos = args
        .iter()
        .skip(1)
        .position(|a| SUBCOMMANDS.contains(&a.as_str()))
        .map(|p| p + 1);
    let (sub, insert_at) = match pos {
        Some(p) => (args[p].clone(), p + 1),
        None => {
            if args
                .iter()
                .skip(1)
                .any(|a| a == "--help" || a == "-h" || a == "--version")
            {
                return Ok(args);
            }
            args.insert(1.min(args.len()), "run".into());
            ("run".to_string(), 2.min(args.len()))
        }
    };
    for (key, _) in &doc {
        if !SUBCOMMANDS.contains(&key.as_str()) {
            return Err(bad(
                &path,
                format!(
                    "unknown section [{key}] (use [run], [generate], [repl], [check] or [broker])"
                ),
            ));
        }
    }
    let Some(cmd) = cli.find_subcommand(&sub) else {
        return Ok(args);
    };
    let mut sections: Vec<(&str, &toml::Table)> = Vec::new();
    if let Some(t) = doc.get(&sub).and_then(|v| v.as_table()) {
        sections.push((sub.as_str(), t));
    }
    if sub == "repl" {
        if let Some(t) = doc.get("run").and_then(|v| v.as_table()) {
            sections.push(("run", t));
        }
    }
    let given = |long: &str| {
        args.iter()
            .any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")))
    };
    let mut extra: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (section, table) in sections {
        for (key, value) in table {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()));
            let Some(arg) = arg else {
                if section == sub {
                    return Err(bad(
                        &path,
                        format!("[{section}] unknown option `{key}` (see `runnel {sub} --help`)"),
                    ));
                }
                continue;
            };
            if !seen.insert(key.clone()) || given(key) {
                continue;
            }
            if arg.get_env().is_some_and(|e| std::env::var_os(e).is_some()) {
                continue;
            }
            let flag = format!("--{key}");
            match value {
                toml::Value::Boolean(true) => extra.push(flag),
                toml::Value::Boolean(false) => {}
                toml::Value::Array(items) => {
                    for v in items {
                        extra.push(flag.clone());
                        extra.push(scalar(&path, section, key, v)?);
                    }
                }
                v => {
                    extra.push(flag);
                    extra.push(scalar(&path, section, key, v)?);
                }
            }
        }
    }
    args.splice(insert_at..insert_at, extra);
    Ok(args)
}

fn scalar(path: &Path, section: &str, key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => {
            return Err(bad(
                path,
                format!("[{section}] `{key}`: use a string, number, boolean or a list of them"),
            ))
        }
    })
}

fn bad(path: &Path, message: String) -> Error {
    Error::Schema {
        path: path.to_path_buf(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cli() -> Command {
        Command::new("runnel").subcommand(
            Command::new("run")
                .arg(
                    Arg::new("source")
                        .long("source")
                        .env("RUNNEL_TEST_SOURCE_X"),
                )
                .arg(Arg::new("sink").long("sink").action(ArgAction::Append))
                .arg(Arg::new("group").long("group"))
                .arg(
                    Arg::new("until-drained")
                        .long("until-drained")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn file_options_fill_in_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("runnel.toml");
        std::fs::write(
            &f,
            "[run]\nsource = \"files:data\"\nsink = [\"ndjson:a\", \"ndjson:b\"]\ngroup = \"g\"\nuntil-drained = true\n",
        )
        .unwrap();
        let cfg = format!("--config={}", f.display());
        let out = expand_args(args(&["runnel", &cfg, "run", "--group", "cli"]), &cli()).unwrap();
        assert_eq!(
            out,
            args(&[
                "runnel",
                "run",
                "--sink",
                "ndjson:a",
                "--sink",
                "ndjson:b",
                "--source",
                "files:data",
                "--until-drained",
                "--group",
                "cli"
            ])
        );
        // No subcommand: `run` is implied.
        let out = expand_args(args(&["runnel", "--config", f.to_str().unwrap()]), &cli()).unwrap();
        assert_eq!(&out[..3], &args(&["runnel", "run", "--group"])[..]);
    }

    #[test]
    fn unknown_keys_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, "[run]\nsorce = \"x\"\n").unwrap();
        let e = expand_args(
            args(&["runnel", "--config", f.to_str().unwrap(), "run"]),
            &cli(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad.toml") && e.contains("sorce"), "{e}");
        std::fs::write(&f, "[runn]\n").unwrap();
        let e = expand_args(args(&["runnel", "--config", f.to_str().unwrap()]), &cli())
            .unwrap_err()
            .to_string();
        assert!(e.contains("[runn]"), "{e}");
    }
}
