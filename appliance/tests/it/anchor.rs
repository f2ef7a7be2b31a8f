use crate::{Scratch, s, vpbox};

const SLIP: &str = r#"{"merchant_id":"898310048160001","terminal_id":"10000001","rrn":"123456789012","txn_time":"2026-11-24T10:15:30+08:00","amount":"128.00"}"#;

#[test]
fn hash_prints_key_and_value_as_bytes32() {
    let dir = Scratch::new();
    let slip = dir.write("slip.json", SLIP);
    let run = vpbox(&["anchor", "hash", s(&slip)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = run.text();
    let fields: Vec<&str> = text.trim_end().split("  ").collect();
    assert_eq!(fields.len(), 3, "{text}");
    assert!(fields[0].starts_with("0x") && fields[0].len() == 66);
    assert_eq!(fields[2], s(&slip));
    // The value is the SM3 of the file's bytes: the same as `vpbox sm3`.
    let sum = vpbox(&["sm3", s(&slip)]).text();
    assert_eq!(&fields[1][2..], &sum[..64]);
    assert_eq!(
        vpbox(&["anchor", "hash", "--raw", s(&slip)]).text(),
        format!("{}  {}\n", fields[1], s(&slip))
    );

    let json = vpbox(&["anchor", "hash", "--json", s(&slip)]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["key"], fields[0]);
    assert_eq!(v[0]["value"], fields[1]);
}

#[test]
fn malformed_slips_exit_2_and_name_the_problem() {
    let dir = Scratch::new();
    let good = dir.write("good.json", SLIP);
    let bad = dir.write("bad.json", SLIP.replace("+08:00", ""));
    let pdf = dir.write("slip.pdf", b"%PDF-1.7 ...");
    let run = vpbox(&["anchor", "hash", s(&good), s(&bad), s(&pdf)]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("txn_time"), "{}", run.stderr);
    assert!(run.stderr.contains("--raw"), "{}", run.stderr);
    assert_eq!(run.text().lines().count(), 1, "the good slip is still hashed");
    assert_eq!(vpbox(&["anchor", "hash"]).code, 2, "a slip is required");
}
