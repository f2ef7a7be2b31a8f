use crate::{Scratch, openssl, s, vpbox, vpbox_stdin};

fn openssl_sm3(path: &std::path::Path) -> String {
    let run = openssl(&["dgst", "-sm3", "-r", s(path)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.text()[..64].to_string()
}

#[test]
fn equals_openssl_on_empty_small_and_multi_mib_files() {
    let dir = Scratch::new();
    for (name, size) in [("empty", 0usize), ("small", 37), ("big", 5 * 1024 * 1024 + 3)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        let f = dir.write(name, &data);
        let run = vpbox(&["sm3", s(&f)]);
        assert_eq!(run.code, 0);
        assert_eq!(run.text(), format!("{}  {}\n", openssl_sm3(&f), s(&f)));
    }
}

#[test]
fn reads_stdin_with_no_file_or_dash() {
    let dir = Scratch::new();
    let data = vec![0xabu8; 200_000];
    let want = openssl_sm3(&dir.write("d", &data));
    assert_eq!(vpbox_stdin(&["sm3"], &data).text(), format!("{want}  -\n"));
    assert_eq!(vpbox_stdin(&["sm3", "-"], &data).text(), format!("{want}  -\n"));
}

#[test]
fn check_mode_is_like_sha256sum() {
    let dir = Scratch::new();
    let a = dir.write("a", b"alpha");
    let b = dir.write("b", b"beta");
    let list = vpbox(&["sm3", s(&a), s(&b)]);
    let sums = dir.write("SUMS", &list.stdout);
    let ok = vpbox(&["sm3", "--check", s(&sums)]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(ok.text(), format!("{}: OK\n{}: OK\n", s(&a), s(&b)));
    assert_eq!(vpbox(&["sm3", "-c", "--quiet", s(&sums)]).text(), "");

    std::fs::write(&b, b"tampered").unwrap();
    let bad = vpbox(&["sm3", "--check", s(&sums)]);
    assert_eq!(bad.code, 1);
    assert!(bad.text().contains(&format!("{}: FAILED\n", s(&b))));
    assert!(bad.stderr.contains("1 computed checksum did NOT match"));

    std::fs::remove_file(&a).unwrap();
    let gone = vpbox(&["sm3", "--check", "--json", s(&sums)]);
    assert_eq!(gone.code, 1);
    let v: serde_json::Value = serde_json::from_slice(&gone.stdout).unwrap();
    assert_eq!(v[0]["status"], "FAILED open or read");
    assert_eq!(v[1]["status"], "FAILED");

    let junk = dir.write("junk", "not a checksum line\n");
    let none = vpbox(&["sm3", "--check", s(&junk)]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("no properly formatted"));
}

#[test]
fn json_output() {
    let dir = Scratch::new();
    let a = dir.write("a", b"abc");
    let run = vpbox(&["sm3", "--json", s(&a)]);
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v[0]["sm3"], "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
    assert_eq!(v[0]["file"], s(&a));
}

#[test]
fn unreadable_inputs_exit_2_and_the_rest_are_still_hashed() {
    let dir = Scratch::new();
    let a = dir.write("a", b"abc");
    let run = vpbox(&["sm3", "/nonexistent/file", s(dir.0.path()), s(&a)]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("No such file"), "{}", run.stderr);
    assert!(run.stderr.contains("Is a directory"), "{}", run.stderr);
    assert!(run.text().contains("66c7f0f462eeedd9"));
    assert_eq!(vpbox(&["sm3", "--bogus-flag"]).code, 2);
}
