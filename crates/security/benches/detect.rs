//! Throughput of `detect` against the guide's eight-substring baseline on
//! benign English text of 1 KiB and 16 KiB, and on 1 KiB chunks of the
//! English benign prompts of the hold-out corpora, and on chat-sized messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use agent_patterns_security::{PromptInjectionDetector, naive_contains_injection};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PARAGRAPH: &str = "The quarterly report covers revenue, churn and hiring across all \
regions. Our team reviewed the previous version of the deployment guide and updated the \
instructions for installing the command line tools with sudo apt install on Ubuntu. \
Customers asked how to configure the admin: key in the YAML file, why the build ignores \
the previous error, and whether the new dashboard shows incidents by severity. The \
meeting notes list action items for the platform, data and support teams, with owners \
and due dates for each of them. ";

fn text_of(len: usize) -> String {
    let mut s = String::with_capacity(len + PARAGRAPH.len());
    while s.len() < len {
        s.push_str(PARAGRAPH);
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn bench(c: &mut Criterion) {
    let detector = PromptInjectionDetector::new().unwrap();
    for (name, len) in [("1KiB", 1024usize), ("16KiB", 16 * 1024)] {
        let text = text_of(len);
        assert!(
            !detector.is_injection(&text),
            "benchmark text must be benign"
        );
        let mut group = c.benchmark_group(format!("detect_{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function("detect", |b| b.iter(|| detector.detect(black_box(&text))));
        // The phrase rules alone, without the lexical model: what the model costs.
        let rules_only = detector.clone().without_lexical_model();
        group.bench_function("rules_only", |b| {
            b.iter(|| rules_only.detect(black_box(&text)))
        });
        group.bench_function("eight_substring_baseline", |b| {
            b.iter(|| naive_contains_injection(black_box(&text)))
        });
        group.finish();
    }
}

/// Benign prompts from the hold-out corpora, English only (no character
/// outside ASCII), joined and cut into 1 KiB chunks: realistic text with code,
/// logs, trigger words used innocently and many short lines.
fn prompt_chunks() -> Vec<String> {
    let mut text = String::new();
    for file in [
        include_str!("../tests/data/benign_holdout5.jsonl"),
        include_str!("../tests/data/benign_holdout6.jsonl"),
        include_str!("../tests/data/benign_holdout7.jsonl"),
    ] {
        for line in file.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let prompt = value["text"].as_str().unwrap();
            if prompt.is_ascii() {
                text.push_str(prompt);
                text.push('\n');
            }
        }
    }
    text.as_bytes()
        .chunks(1024)
        .filter(|c| c.len() == 1024)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect()
}

fn bench_prompts(c: &mut Criterion) {
    let detector = PromptInjectionDetector::new().unwrap();
    let chunks = prompt_chunks();
    let bytes: usize = chunks.iter().map(String::len).sum();
    let mut group = c.benchmark_group("detect_prompts_1KiB");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("detect", |b| {
        b.iter(|| {
            for chunk in &chunks {
                black_box(detector.detect(black_box(chunk)));
            }
        })
    });
    group.bench_function("eight_substring_baseline", |b| {
        b.iter(|| {
            for chunk in &chunks {
                black_box(naive_contains_injection(black_box(chunk)));
            }
        })
    });
    group.finish();
}

/// Chat-sized messages, where the fixed cost of a call shows.
fn bench_short(c: &mut Criterion) {
    const MESSAGES: [&str; 4] = [
        "What is 6 * 7?",
        "Can you summarise this article in three bullet points?",
        "How do I use sudo on Ubuntu to install nginx?",
        "Translate 'good morning' into French and German, please.",
    ];
    let detector = PromptInjectionDetector::new().unwrap();
    let bytes: usize = MESSAGES.iter().map(|m| m.len()).sum();
    let mut group = c.benchmark_group("detect_chat_messages");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("detect", |b| {
        b.iter(|| {
            for message in MESSAGES {
                black_box(detector.detect(black_box(message)));
            }
        })
    });
    group.bench_function("eight_substring_baseline", |b| {
        b.iter(|| {
            for message in MESSAGES {
                black_box(naive_contains_injection(black_box(message)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_prompts, bench_short);
criterion_main!(benches);
