//! The `attend` command.
#![forbid(unsafe_code)]

mod bench;
mod effect;
mod embed;
mod explain;
mod generate;
mod input;
mod models_cmd;
mod output;
mod serve;
mod train;
mod usage;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// attend — exact, fast attention on the CPU, and tools to see it.
#[derive(Parser, Debug)]
#[command(name = "attend", version, about)]
struct Cli {
    /// Worker threads (default: every core).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show which tokens each token attends to, in a real model (default: all-MiniLM-L6-v2;
    /// --model takes decoders too: SmolLM2, Gemma 3, any GGUF attend reads).
    ///
    /// Defaults: the last layer, the mean over its heads, every token, the top 5.
    /// Example: attend explain "The animal didn't cross the road because it was tired"
    /// --token it --compare animal road
    Explain(explain::ExplainArgs),
    /// Does the attention matter? Knock out each token and ablate each head, and see how a
    /// decoder's prediction (its log-probability) or an encoder's sentence embedding (1 − cos)
    /// changes, beside the attention.
    ///
    /// Example: attend effect --target " tired" "The animal didn't cross the road because
    /// it was"
    Effect(effect::EffectArgs),
    /// Sentence embeddings (mean-pooled, normalised), or their cosine similarities.
    Embed(embed::EmbedArgs),
    /// Continue a prompt with a causal language model (default: SmolLM2-135M-Instruct, GGUF).
    ///
    /// Greedy by default; --temperature, --top-k, --top-p and --seed sample. --explain shows,
    /// for each new token, the earlier tokens its prediction attended to.
    /// Example: attend generate --explain --skip-first "The capital of France is"
    Generate(generate::GenerateArgs),
    /// A local web app: type a text, pick a model, see the interactive viewer of its attention.
    ///
    /// Loopback only unless --host says otherwise. Example: attend serve --port 8000, then
    /// open http://127.0.0.1:8000/
    Serve(serve::ServeArgs),
    /// Train a small transformer from scratch on attend's kernel: the built-in Winograd task,
    /// or a text file byte by byte.
    ///
    /// Example: attend train winograd -o my-winograd, then
    /// attend explain --model my-winograd --compare dog street "The dog didn't cross the
    /// street because it was tired. it ="
    Train(train::TrainArgs),
    /// List the models attend knows by name.
    Models {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Download a named model into the cache (once; verified by SHA-256) and print its folder.
    Fetch {
        /// The model's name (see `attend models`).
        name: String,
    },
    /// Measure the kernels on the standard cases (bench/README.md), with the machine's limits
    /// (peak-fma, copy bandwidth) measured in the same run.
    Bench(bench::BenchArgs),
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // one line: clap's first (the error itself) — with what it lists after a colon,
            // such as the missing `<TEXT>` — and where to look for more
            let text = e.render().to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let mut first = lines.next().unwrap_or("error").trim_end().to_string();
            if first.ends_with(':') {
                let listed: Vec<&str> = lines
                    .take_while(|l| l.starts_with(' ') && !l.trim_start().starts_with("Usage"))
                    .map(str::trim)
                    .collect();
                first = format!("{} {}", first, listed.join(", "));
            }
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(cores);
    // more threads than this only adds start-up time and contention
    let max_threads = (8 * cores).max(256);
    if threads == 0 || threads > max_threads {
        eprintln!(
            "error: --threads {threads} is out of range: give 1 to {max_threads} ({cores} cores here)"
        );
        return ExitCode::from(2);
    }
    // Ctrl-C, SIGTERM, SIGHUP: stop a model fetch's pip and remove its temporary folder before
    // going (the default would leave pip running on its own); then exit as interrupted
    // (`serve` stops on its own signals, cleanly, and fetches nothing while serving)
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = ctrlc::set_handler(|| {
            attend_models::registry::abort_fetch();
            eprintln!("attend: interrupted");
            std::process::exit(130);
        });
    }
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot start {threads} threads: {e}");
            return ExitCode::from(1);
        }
    };
    let result = pool.install(|| match cli.command {
        Command::Bench(args) => bench::run(&args, threads),
        Command::Explain(args) => explain::run(&args),
        Command::Effect(args) => effect::run(&args),
        Command::Embed(args) => embed::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Serve(args) => serve::run(&args, threads),
        Command::Train(args) => train::run(&args, threads),
        Command::Models { format } => models_cmd::list(format),
        Command::Fetch { name } => models_cmd::fetch(&name),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // a closed pipe (`attend bench | head`) is not a failure
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let _ = std::io::stdout().flush();
            eprintln!("error: {}", one_line(&e));
            if e.downcast_ref::<usage::Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes on one line, each cause once: a message that already contains its
/// cause (`{path}: {io error}`) is not followed by it again.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
