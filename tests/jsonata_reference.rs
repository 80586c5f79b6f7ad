//! Differential test: the example mappings (every JSONata chain of
//! `config/examples/finch-to-unified`, level by level and whole) evaluated by shadowdiff's
//! engine (in its worker processes) and by the reference implementation, the `jsonata` npm
//! package, must give identical documents.
//!
//! The package is looked for in `target/npm` (`scripts/test.sh` installs it there); when missing, this
//! test installs it with `npm install --prefix target/npm jsonata@2` (the npm registry is one of
//! the registries this project may use).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use shadowdiff::config::Config;
use shadowdiff::mapping::runner::Runner;
use shadowdiff::mapping::{self, Chain, Lang, Level};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `target/npm/node_modules`, with `jsonata` installed.
fn reference_modules() -> PathBuf {
    let prefix = root().join("target/npm");
    let modules = prefix.join("node_modules");
    if !modules.join("jsonata/package.json").is_file() {
        let status = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&prefix)
            .arg("jsonata@2")
            .status()
            .expect(
                "npm is needed for the JSONata reference test (bash scripts/test.sh installs it)",
            );
        assert!(status.success(), "npm install jsonata@2 failed");
    }
    modules
}

/// Evaluates chains of JSONata sources with the reference implementation.
fn reference(chains: &[(Vec<String>, Value)]) -> Vec<Value> {
    let input: Vec<Value> = chains
        .iter()
        .map(|(levels, input)| json!({"levels": levels, "input": input}))
        .collect();
    let mut child = Command::new("node")
        .arg(root().join("tests/js/jsonata-reference.js"))
        .env("NODE_PATH", reference_modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is needed for the JSONata reference test");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference script failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn example_mappings_agree_with_the_reference_implementation() {
    let cfg = Config::load(&root().join("config/examples/finch-to-unified/shadowdiff.toml"))
        .expect("the example config loads");
    let sample: Value = serde_json::from_slice(
        &std::fs::read(root().join("config/examples/finch-to-unified/samples/employees.json"))
            .unwrap(),
    )
    .unwrap();
    // One employee only: the singleton case the `[...]` idiom is there for.
    let mut single = sample.clone();
    single["results"].as_array_mut().unwrap().truncate(1);
    let empty = json!({"results": []});

    // Every JSONata chain of the example (whole and each prefix), on each input.
    let mut chains: Vec<Chain> = Vec::new();
    for r in &cfg.routes {
        let all = r
            .mappings
            .candidate
            .iter()
            .chain(r.mappings.accounts.values());
        for c in all {
            if c.levels.iter().all(|l| l.mapping.lang() == Lang::Jsonata) {
                for n in 1..=c.levels.len() {
                    chains.push(Chain::new(c.levels[..n].to_vec()));
                }
            }
        }
    }
    // And the idioms the README shows.
    for src in [
        r#"{"ids": results.remote_id}"#,
        r#"{"ids": [results.remote_id]}"#,
        r#"$map(results, function($e) { $e.first_name & " " & $e.last_name })"#,
        r#"results[employment_status = "ACTIVE"].{"id": remote_id}"#,
        r#"$merge([{"a": 1}, {"b": results[0].team}])"#,
        r#"$lookup(results[0], "team")"#,
    ] {
        chains.push(Chain::new(vec![Level {
            name: "base".into(),
            origin: "README".into(),
            mapping: mapping::compile(Lang::Jsonata, src).unwrap(),
        }]));
    }
    assert!(chains.len() >= 10, "{} chains", chains.len());

    let runner = Runner::new(env!("CARGO_BIN_EXE_shadowdiff").into(), 2);
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for chain in &chains {
        for input in [&sample, &single, &empty] {
            let sources: Vec<String> = chain
                .levels
                .iter()
                .map(|l| l.mapping.source().to_owned())
                .collect();
            cases.push((sources, input.clone()));
            ours.push(runner.run(chain, input, Duration::from_secs(5)));
        }
    }
    let theirs = reference(&cases);
    assert_eq!(theirs.len(), ours.len());
    let mut compared = 0;
    for (i, (mine, reference)) in ours.iter().zip(&theirs).enumerate() {
        let what = format!("{:?} on input {}", cases[i].0, i % 3);
        match (mine, reference.get("ok")) {
            (Ok(v), Some(r)) => {
                assert_eq!(v, r, "{what}");
                compared += 1;
            }
            (Err(e), None) => {
                // Both fail or both give nothing.
                assert!(
                    reference.get("error").is_some() || reference.get("undefined").is_some(),
                    "{what}: {e} vs {reference}"
                );
            }
            _ => panic!("{what}: ours {mine:?}, reference {reference}"),
        }
    }
    println!("{compared} documents identical to the reference implementation's");
    assert!(compared >= 25, "{compared}");
}
