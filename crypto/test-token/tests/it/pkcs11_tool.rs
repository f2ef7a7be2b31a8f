//! OpenSC's `pkcs11-tool` drives the module as a generic PKCS#11 client.

use crate::*;

#[test]
fn pkcs11_tool_lists_the_token_objects_and_mechanisms() {
    if let Some(c) = child() {
        let pkcs11 = open();
        let slot = init_token(&pkcs11);
        let session = user_session(&pkcs11, slot);
        generate(&session, &[0xa1, 0xb2], "vpbox-node-1");
        return c.done();
    }
    let scenario =
        Scenario::new("pkcs11_tool::pkcs11_tool_lists_the_token_objects_and_mechanisms", "");
    scenario.run("setup");
    let module = module_path();
    let module = module.to_str().unwrap();
    let tool = "/usr/bin/pkcs11-tool";

    let (ok, slots) = scenario.command(tool, &["--module", module, "-L"]);
    assert!(ok, "{slots}");
    for want in [LABEL, "vpbox-sansec-compatible", "TESTTOKEN", "PIN initialized"] {
        assert!(slots.contains(want), "-L lacks {want:?}:\n{slots}");
    }

    let (ok, mechanisms) = scenario.command(tool, &["--module", module, "-M"]);
    assert!(ok, "{mechanisms}");
    for code in ["0x80008001", "0x80008104", "0x80008102", "0x80008103", "0x80009001"] {
        assert!(mechanisms.contains(code), "-M lacks {code}:\n{mechanisms}");
    }

    let (ok, objects) =
        scenario.command(tool, &["--module", module, "-O", "--login", "--pin", USER_PIN]);
    assert!(ok, "{objects}");
    for want in ["Private Key Object", "Public Key Object", "vpbox-node-1", "a1b2"] {
        assert!(objects.contains(want), "-O lacks {want:?}:\n{objects}");
    }
    // Without login only the public key is listed.
    let (ok, public) = scenario.command(tool, &["--module", module, "-O"]);
    assert!(ok && !public.contains("Private Key Object"), "{public}");
}
