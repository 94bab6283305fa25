//! `attend models` and `attend fetch`.

use anyhow::Result;
use attend_models::registry;
use serde_json::json;

use crate::Format;

/// Lists the known models.
pub fn list(format: Format) -> Result<()> {
    for m in registry::KNOWN {
        let cached = registry::is_cached(m);
        let path = registry::model_dir(m);
        match format {
            Format::Json => println!(
                "{}",
                json!({"name": m.name, "family": m.family, "description": m.description,
                       "size_mb": m.size_mb, "source": m.source(),
                       "sha256": m.sha256(), "licence": m.licence, "cached": cached, "path": path})
            ),
            Format::Text => println!(
                "{:<8} {:<6} {:>4} MB  {}\n         {}\n         licence: {}\n         source: {}",
                m.name,
                m.family,
                m.size_mb,
                if cached {
                    format!("cached in {}", path.display())
                } else {
                    "not cached".into()
                },
                m.description,
                m.licence,
                m.source()
            ),
        }
    }
    for name in attend_models::models::embedded::NAMES {
        let Some(Ok(ck)) = attend_models::models::embedded::get(name) else {
            continue;
        };
        let c = &ck.model.config;
        let description = format!(
            "trained by attend itself (attend train winograd): {} layers × {} heads, dim {}, \
             {} words; {} parameters",
            c.layers,
            c.heads,
            c.dim,
            c.vocab.len(),
            ck.model.params.len()
        );
        let kb = ck.model.params.len() * 4 / 1024;
        match format {
            Format::Json => println!(
                "{}",
                json!({"name": name, "family": "toy", "description": description,
                       "size_kb": kb, "source": "embedded", "cached": true})
            ),
            Format::Text => println!(
                "{name:<8} toy    {kb:>4} KB  embedded in the binary\n         {description}"
            ),
        }
    }
    Ok(())
}

/// Fetches a named model and prints its folder.
pub fn fetch(name: &str) -> Result<()> {
    let m = registry::info(name).ok_or_else(|| {
        let known: Vec<&str> = registry::KNOWN.iter().map(|m| m.name).collect();
        crate::usage!(
            "unknown model `{name}`; the known models are {}",
            known.join(", ")
        )
    })?;
    let dir = registry::fetch(m, &mut |msg| eprintln!("{msg}"))?;
    println!("{}", dir.display());
    Ok(())
}
