//! `schema-check`: fails CI on an unsafe message change. See `schema-check --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Writes to stdout; a reader that went away (`schema-check check | head`) is no error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `out!` without the final newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}
use upcaster_check::{self as check, compat, output, Config};

/// Checks that message schemas, migrations and samples keep every queued message readable.
///
/// Exit codes: 0 clean, 1 error-level findings (or, for `diff`, incompatible), 2 usage or
/// configuration error.
#[derive(Parser)]
#[command(name = "schema-check", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    repo: RepoArgs,
}

#[derive(clap::Args, Clone)]
struct RepoArgs {
    /// The schemas directory.
    #[arg(long, default_value = "schemas", global = true)]
    schemas: PathBuf,
    /// The migrations directory.
    #[arg(long, default_value = "migrations", global = true)]
    migrations: PathBuf,
    /// The samples directory.
    #[arg(long, default_value = "tests/samples", global = true)]
    samples: PathBuf,
    /// Compare with the schemas at this git ref (a base branch), like `buf breaking --against`.
    #[arg(long, global = true)]
    against: Option<String>,
    /// Output: text, json, github (Actions annotations) or sarif.
    #[arg(long, default_value = "text", global = true)]
    format: output::OutputFormat,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every rule over the repository (the default).
    Check,
    /// Compare two JSON Schema files: exit 0 when compatible, 1 when not.
    Diff {
        /// The old schema.
        old: PathBuf,
        /// The new schema.
        new: PathBuf,
        /// backward (new readers, old writers), forward, or full.
        #[arg(long, default_value = "backward")]
        mode: String,
    },
    /// List every rule with its severity and what it finds.
    Rules,
    /// Manage the stored samples.
    #[command(subcommand)]
    Sample(SampleCmd),
}

#[derive(Subcommand)]
enum SampleCmd {
    /// Store a message (an envelope, as a queue held it) as a sample, under the type and
    /// version its envelope names. Existing samples are never overwritten.
    Add {
        /// The file holding the message bytes (JSON or MessagePack).
        file: PathBuf,
        /// The sample's name, without extension.
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Check) {
        Cmd::Check => {
            let config = Config::new(cli.repo.schemas, cli.repo.migrations, cli.repo.samples)
                .against(cli.repo.against);
            match check::check(&config) {
                Ok(findings) => {
                    out_raw!("{}", output::render(&findings, cli.repo.format));
                    if check::has_errors(&findings) {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("schema-check: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Diff { old, new, mode } => diff(&old, &new, &mode, cli.repo.format),
        Cmd::Sample(SampleCmd::Add { file, name }) => add_sample(&cli.repo, &file, &name),
        Cmd::Rules => {
            for rule in check::rules::ALL {
                out!("{:<28} {:<8} {}", rule.id, rule.severity, rule.summary);
            }
            ExitCode::SUCCESS
        }
    }
}

fn diff(old: &PathBuf, new: &PathBuf, mode: &str, format: output::OutputFormat) -> ExitCode {
    let mode: compat::Mode = match mode.parse() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("schema-check: {e}");
            return ExitCode::from(2);
        }
    };
    let read = |p: &PathBuf| -> Result<serde_json::Value, String> {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let schema: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))?;
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(format!(
                "{} is not a JSON Schema (an object or a boolean)",
                p.display()
            ));
        }
        Ok(schema)
    };
    let (old_schema, new_schema) = match (read(old), read(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("schema-check: {e}");
            return ExitCode::from(2);
        }
    };
    let changes = compat::diff(&old_schema, &new_schema, mode);
    let compatible = compat::compatible(&changes);
    match format {
        output::OutputFormat::Json | output::OutputFormat::Sarif => {
            let report = serde_json::json!({"compatible": compatible, "changes": changes});
            out!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        _ => {
            for c in &changes {
                let kind = if c.breaking { "breaking" } else { "info" };
                out!("{kind}[{}] {} ({})", c.rule, c, c.direction);
            }
            out!(
                "{}",
                if compatible {
                    "compatible"
                } else {
                    "incompatible"
                }
            );
        }
    }
    if compatible {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn add_sample(repo: &RepoArgs, file: &PathBuf, name: &str) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("schema-check: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let manifest: Option<upcaster::schema::Manifest> =
        std::fs::read_to_string(repo.schemas.join(upcaster::schema::MANIFEST))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let header = match upcaster::peek(&bytes) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("schema-check: {} is not a message: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let type_name = manifest
        .as_ref()
        .and_then(|m| {
            m.types
                .iter()
                .find(|(n, t)| {
                    **n == header.type_name || t.aliases.iter().any(|a| *a == header.type_name)
                })
                .map(|(n, _)| n.clone())
        })
        .unwrap_or_else(|| header.type_name.to_string());
    match upcaster::schema::store_sample_as(
        &repo.samples,
        &type_name,
        header.version,
        header.format,
        name,
        &bytes,
    ) {
        Ok(path) => {
            out!("stored {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("schema-check: {e}");
            ExitCode::from(1)
        }
    }
}
