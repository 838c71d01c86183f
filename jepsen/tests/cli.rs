//! The `runnel-jepsen check` command: exit 0 and `valid` for a clean history, exit 1 naming the
//! anomaly for a history with a lost write, exit 2 for an unreadable history.

use std::process::Command;

const CLEAN: &str = r#"{"process":1,"type":"invoke","f":"send","values":[1],"t0":0}
{"process":1,"type":"ok","f":"send","shard":"s0","values":[1],"seqs":["10"],"t0":0,"t1":1}
{"process":9,"type":"invoke","f":"drain","shard":"s0","t0":5}
{"process":9,"type":"ok","f":"drain","shard":"s0","reads":[["10",1]],"caught_up":true,"t0":5,"t1":6}
"#;

fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runnel-jepsen"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_exit_codes() {
    let (code, out) = check(CLEAN);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"valid\": true"), "{out}");
    let lost = CLEAN.replace(r#"[["10",1]]"#, "[]");
    let (code, out) = check(&lost);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("lost-write"), "{out}");
    let (code, _) = check("not json\n");
    assert_eq!(code, 2);
}
