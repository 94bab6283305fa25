//! Top-5 next tokens of a prompt on a GGUF model: `cargo run --release -p attend-models
//! --example smollm2_top5 -- FILE.gguf "The capital of France is"`.
use attend_models::generate::AttnCapture;
use attend_models::models::{arch, load_decoder};

fn main() -> attend_models::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let m = load_decoder(std::path::Path::new(&args[1]))?;
    let tok = arch::tokenizer(&m.file)?;
    let ids: Vec<u32> = tok.encode(&args[2])?.iter().map(|t| t.id).collect();
    println!("ids {ids:?}");
    let mut cache = m.new_cache()?;
    let t = std::time::Instant::now();
    let f = m.forward(&ids, &mut cache, false, AttnCapture::None)?;
    println!("forward {:?}", t.elapsed());
    let mut idx: Vec<usize> = (0..f.logits.len()).collect();
    idx.sort_by(|&a, &b| f.logits[b].total_cmp(&f.logits[a]));
    for &i in &idx[..5] {
        println!("{i} {:?} {:.4}", tok.tokens[i], f.logits[i]);
    }
    Ok(())
}
