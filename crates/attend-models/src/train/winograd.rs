//! A Winograd-style task, generated: two nouns of different kinds, an adjective that fits only
//! one kind, and a pronoun whose referent the adjective decides —
//! `The dog didn't cross the street because it was tired. it = dog`.
//!
//! Three domains (crossing, fitting, lifting) each pair two kinds of noun with adjectives of
//! each kind, over templates that put either kind first, so that neither word position nor
//! word order gives the answer away: only the adjective's kind does.
//!
//! The held-out split, fixed for every seed: one (noun, noun, adjective) combination in five
//! (by a hash of the three words, whatever the order) never appears in training, and four
//! templates are never used in training ([`Template::held_out`]); their words all occur in
//! training templates, so every held-out text is made of known tokens.

use super::config::{TaskSpec, TrainConfig};
use super::optim::OptimConfig;
use crate::models::toy::ToyConfig;
use crate::rng::Rng;
use crate::tokenize::vocab::{split_words, Vocab, EOS};

/// Two kinds of noun, and the adjectives that point to each.
#[derive(Debug)]
pub struct Domain {
    /// What the domain is about.
    pub name: &'static str,
    /// Nouns of kind A.
    pub a: &'static [&'static str],
    /// Adjectives that make kind A the referent.
    pub a_adj: &'static [&'static str],
    /// Nouns of kind B.
    pub b: &'static [&'static str],
    /// Adjectives that make kind B the referent.
    pub b_adj: &'static [&'static str],
}

/// The domains.
pub const DOMAINS: &[Domain] = &[
    Domain {
        name: "cross",
        a: &[
            "animal", "dog", "cat", "horse", "cow", "fox", "goat", "sheep", "rabbit", "deer",
        ],
        a_adj: &["tired", "sleepy", "scared", "lazy", "old", "slow"],
        b: &[
            "road", "street", "river", "bridge", "field", "track", "lane", "stream",
        ],
        b_adj: &["wide", "busy", "long", "wet", "icy", "crowded"],
    },
    Domain {
        name: "fit",
        a: &[
            "trophy", "ball", "book", "lamp", "vase", "statue", "bottle", "cake",
        ],
        a_adj: &["big", "large", "tall", "huge"],
        b: &[
            "suitcase", "bag", "drawer", "case", "basket", "crate", "box", "cupboard",
        ],
        b_adj: &["small", "tiny", "narrow", "full"],
    },
    Domain {
        name: "lift",
        a: &["man", "woman", "boy", "girl", "child", "worker"],
        a_adj: &["weak", "young", "sick", "frail"],
        b: &["rock", "table", "piano", "log", "sofa", "barrel"],
        b_adj: &["heavy", "bulky", "slippery", "awkward"],
    },
];

/// A sentence frame: `{1}` and `{2}` are the nouns, `{adj}` the adjective.
#[derive(Debug)]
pub struct Template {
    /// The frame.
    pub text: &'static str,
    /// Index into [`DOMAINS`].
    pub domain: usize,
    /// Whether `{1}` is of kind A (else `{2}` is).
    pub a_first: bool,
    /// Never used in training.
    pub held_out: bool,
}

const fn tpl(text: &'static str, domain: usize, a_first: bool, held_out: bool) -> Template {
    Template {
        text,
        domain,
        a_first,
        held_out,
    }
}

/// The templates: in every domain, training frames with either kind first (the same words,
/// "could not", open both orders), so that the referent's kind, not its place, decides.
pub const TEMPLATES: &[Template] = &[
    tpl(
        "The {1} didn't cross the {2} because it was {adj}.",
        0,
        true,
        false,
    ),
    tpl(
        "The {1} was not crossed by the {2} because it was {adj}.",
        0,
        false,
        false,
    ),
    tpl(
        "The {1} could not walk across the {2} because it was {adj}.",
        0,
        true,
        false,
    ),
    tpl(
        "The {1} could not be crossed by the {2} because it was {adj}.",
        0,
        false,
        false,
    ),
    tpl(
        "The {1} didn't fit in the {2} because it was too {adj}.",
        1,
        true,
        false,
    ),
    tpl(
        "The {1} could not hold the {2} because it was too {adj}.",
        1,
        false,
        false,
    ),
    tpl(
        "The {1} could not go in the {2} because it was too {adj}.",
        1,
        true,
        false,
    ),
    tpl(
        "The {1} could not take the {2} because it was too {adj}.",
        1,
        false,
        false,
    ),
    tpl(
        "The {1} couldn't lift the {2} because it was too {adj}.",
        2,
        true,
        false,
    ),
    tpl(
        "The {1} was not lifted by the {2} because it was too {adj}.",
        2,
        false,
        false,
    ),
    tpl(
        "The {1} could not carry the {2} because it was too {adj}.",
        2,
        true,
        false,
    ),
    tpl(
        "The {1} could not be lifted by the {2} because it was too {adj}.",
        2,
        false,
        false,
    ),
    // held out: known words in frames never seen in training
    tpl(
        "The {1} didn't walk across the {2} because it was {adj}.",
        0,
        true,
        true,
    ),
    tpl(
        "The {1} could not fit in the {2} because it was too {adj}.",
        1,
        true,
        true,
    ),
    tpl(
        "The {1} didn't hold the {2} because it was too {adj}.",
        1,
        false,
        true,
    ),
    tpl(
        "The {1} couldn't carry the {2} because it was too {adj}.",
        2,
        true,
        true,
    ),
];

/// One generated text.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The sentence and the question, up to and including `=`.
    pub prompt: String,
    /// The referent (the noun the adjective fits).
    pub answer: &'static str,
    /// The other noun.
    pub other: &'static str,
    /// Index into [`TEMPLATES`].
    pub template: usize,
}

impl Example {
    /// The whole training text: `prompt answer`.
    pub fn text(&self) -> String {
        format!("{} {}", self.prompt, self.answer)
    }
}

/// Whether the combination (kind-A noun, kind-B noun, adjective) is held out: one in five, by
/// an FNV-1a hash of the three words.
pub fn combo_held_out(a: &str, b: &str, adj: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a
        .bytes()
        .chain([0])
        .chain(b.bytes())
        .chain([0])
        .chain(adj.bytes())
    {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(5)
}

fn build(t: usize, a: &'static str, b: &'static str, adj: &'static str, to_a: bool) -> Example {
    let tp = &TEMPLATES[t];
    let (n1, n2) = if tp.a_first { (a, b) } else { (b, a) };
    let sentence = tp
        .text
        .replace("{1}", n1)
        .replace("{2}", n2)
        .replace("{adj}", adj);
    let (answer, other) = if to_a { (a, b) } else { (b, a) };
    Example {
        prompt: format!("{sentence} it ="),
        answer,
        other,
        template: t,
    }
}

/// Which examples to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training templates and combinations only.
    Train,
    /// Held-out combinations on training templates, or anything on held-out templates.
    HeldOut,
}

/// Draws one example of `split`.
pub fn sample(rng: &mut Rng, split: Split) -> Example {
    loop {
        let d = rng.below(DOMAINS.len());
        let dom = &DOMAINS[d];
        let a = dom.a[rng.below(dom.a.len())];
        let b = dom.b[rng.below(dom.b.len())];
        let to_a = rng.below(2) == 0;
        let adjs = if to_a { dom.a_adj } else { dom.b_adj };
        let adj = adjs[rng.below(adjs.len())];
        let templates: Vec<usize> = (0..TEMPLATES.len())
            .filter(|&t| TEMPLATES[t].domain == d)
            .collect();
        let t = templates[rng.below(templates.len())];
        let held = combo_held_out(a, b, adj) || TEMPLATES[t].held_out;
        if held == (split == Split::HeldOut) {
            return build(t, a, b, adj, to_a);
        }
    }
}

/// A fixed held-out set of `n` examples (the same for every seed): half on held-out templates,
/// half held-out combinations on training templates.
pub fn held_out_set(n: usize) -> Vec<Example> {
    let mut rng = Rng::new(0x005e_ed0f_4e1d);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let e = sample(&mut rng, Split::HeldOut);
        let want_template = out.len() % 2 == 0;
        if TEMPLATES[e.template].held_out == want_template {
            out.push(e);
        }
    }
    out
}

/// A fixed sample of `n` training examples (to choose a head on data the model trained on).
pub fn train_set(n: usize) -> Vec<Example> {
    let mut rng = Rng::new(0x7a1_5e7);
    (0..n).map(|_| sample(&mut rng, Split::Train)).collect()
}

/// The task's vocabulary: `<eos>`, then every word and mark of every template and list,
/// sorted.
pub fn vocab() -> Vocab {
    let mut words: Vec<String> = Vec::new();
    for t in TEMPLATES {
        let text = t.text.replace(['{', '}'], " ");
        for (s, e) in split_words(&text) {
            let w = &text[s..e];
            if w != "1" && w != "2" && w != "adj" {
                words.push(w.to_string());
            }
        }
    }
    for d in DOMAINS {
        for w in d.a.iter().chain(d.b).chain(d.a_adj).chain(d.b_adj) {
            words.push(w.to_string());
        }
    }
    words.extend(["it".to_string(), "=".to_string()]);
    words.sort();
    words.dedup();
    words.insert(0, EOS.to_string());
    Vocab::Words { words }
}

/// The shape of a Winograd model: `dim` wide, `layers` × `heads`, MLP 4 × `dim`, 32 positions
/// (the longest text is 20 tokens), this task's vocabulary.
pub fn model_config(dim: usize, layers: usize, heads: usize) -> ToyConfig {
    ToyConfig {
        dim,
        layers,
        heads,
        mlp: 4 * dim,
        ctx: 32,
        vocab: vocab(),
    }
}

/// The settings of `attend train winograd` (its defaults: 1000 steps, batch 64, lr 3e-3;
/// they made the shipped `toy-winograd`): AdamW β = (0.9, 0.99), weight decay 0.1, clipping at
/// 1, warm-up over a tenth of the steps (at most 100), cosine decay to a tenth of `lr`.
pub fn train_config(steps: usize, seed: u64, batch: usize, lr: f32) -> TrainConfig {
    TrainConfig {
        task: TaskSpec::Winograd,
        seed,
        batch,
        optim: OptimConfig {
            lr,
            min_lr: lr / 10.0,
            warmup: (steps / 10).clamp(1, 100),
            steps,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            clip: 1.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_held_out_token_is_seen_in_training() {
        let v = vocab();
        let mut seen = vec![false; v.len()];
        let mut rng = Rng::new(1);
        for _ in 0..20_000 {
            let e = sample(&mut rng, Split::Train);
            assert!(!TEMPLATES[e.template].held_out);
            for t in v.encode(&e.text()).unwrap() {
                seen[t.id as usize] = true;
            }
        }
        for e in held_out_set(400) {
            for t in v.encode(&e.text()).unwrap() {
                assert!(seen[t.id as usize], "`{}` of {:?} never trained", t.text, e);
            }
        }
    }

    #[test]
    fn held_out_combinations_never_train() {
        let mut rng = Rng::new(2);
        for _ in 0..5_000 {
            let e = sample(&mut rng, Split::Train);
            let adj = e
                .prompt
                .split(' ')
                .rev()
                .nth(2)
                .unwrap()
                .trim_end_matches('.');
            let d = DOMAINS
                .iter()
                .find(|d| d.a.contains(&e.answer) || d.b.contains(&e.answer));
            let d = d.unwrap();
            let (a, b) = if d.a.contains(&e.answer) {
                (e.answer, e.other)
            } else {
                (e.other, e.answer)
            };
            assert!(!combo_held_out(a, b, adj), "{e:?}");
        }
        let held = held_out_set(200);
        assert_eq!(
            held.iter()
                .filter(|e| TEMPLATES[e.template].held_out)
                .count(),
            100
        );
        // about one combination in five is held out
        let mut total = 0;
        let mut out = 0;
        for d in DOMAINS {
            for a in d.a {
                for b in d.b {
                    for adj in d.a_adj.iter().chain(d.b_adj) {
                        total += 1;
                        out += combo_held_out(a, b, adj) as usize;
                    }
                }
            }
        }
        assert!(
            out * 100 / total > 15 && out * 100 / total < 25,
            "{out}/{total}"
        );
    }

    #[test]
    fn the_referent_is_the_noun_the_adjective_fits() {
        let e = build(0, "dog", "street", "tired", true);
        assert_eq!(
            e.text(),
            "The dog didn't cross the street because it was tired. it = dog"
        );
        let e = build(5, "vase", "box", "small", false);
        assert_eq!(
            e.prompt,
            "The box could not hold the vase because it was too small. it ="
        );
        assert_eq!((e.answer, e.other), ("box", "vase"));
        let mut rng = Rng::new(3);
        let n = 4000;
        let firsts = (0..n)
            .map(|_| sample(&mut rng, Split::Train))
            .filter(|e| e.prompt.split(' ').nth(1) == Some(e.answer))
            .count();
        assert!(
            firsts > n * 2 / 5 && firsts < n * 3 / 5,
            "answer first in {firsts}/{n}"
        );
    }
}
