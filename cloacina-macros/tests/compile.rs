//! Compile tests of `#[task]` and `#[workflow]`: every attribute form
//! compiles and builds what it says (`ui/pass`, each a program that checks
//! its workflow), and each mistake is a compile error with the message and
//! span in its `.stderr` file (`ui/fail`).

#[test]
fn attribute_forms_compile_and_mistakes_do_not() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
